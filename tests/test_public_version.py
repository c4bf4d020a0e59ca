"""versions/public: the version anyone can build (`nix build .#image-public` with internet; the GitHub
workflow builds, pushes and runs it). Its pins are the real upstreams': ComfyUI v0.3.75 from the real
history (../shared/data/comfyui-core) and masquerade-nodes-comfyui from the node-pack corpus, PyPI's torch,
no models. Here GitHub is played by the test git server serving those real repositories, and
`comfyver recheck public` fetches every input by its pin alone and re-hashes it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from comfyver import cli

from tests.support.gitserver import GitServer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LOCK = json.loads((ROOT / "versions/public/version.json").read_text())


def test_every_pin_is_a_public_upstreams_real_commit():
    core = json.loads((SHARED / "comfyui-core/manifest.json").read_text())["nar_hashes"]["v0.3.75"]
    assert LOCK["comfyui"]["locked"]["url"] == "https://github.com/comfyanonymous/ComfyUI"
    assert (LOCK["comfyui"]["locked"]["rev"], LOCK["comfyui"]["locked"]["hash"]) == (core["commit"], core["nar_hash"])
    packs = json.loads((SHARED / "node-packs-v2/manifest.json").read_text())
    by_url = {p["url"]: p for p in packs["packs"]}
    assert LOCK["nodes"], "a node pack from the corpus"
    for name, node in LOCK["nodes"].items():
        pack = by_url[node["locked"]["url"]]
        assert (node["locked"]["rev"], node["locked"]["hash"]) == (pack["commit"], pack["nar_hash"]), name
        assert node["provides"], f"{name}: classes proven by ComfyUI's own loading (lock --probe)"
    assert LOCK["models"] == {} and LOCK["python"]["torch"] == "pypi"
    uv = tomllib.loads((ROOT / "versions/public/uv.lock").read_text())
    sources = {u for p in uv["package"] for u in (p.get("source", {}).get("registry"), p.get("source", {}).get("url")) if u}
    assert sources == {"https://pypi.org/simple"}, sources
    workflows = list((ROOT / "versions/public/workflows").glob("*.json"))
    assert workflows and sorted(f"workflows/{w.name}" for w in workflows) == sorted(LOCK["workflows"])


def test_recheck_fetches_every_pin_from_github(tmp_path, monkeypatch, capsys):
    served = tmp_path / "served"
    (served / "comfyanonymous").mkdir(parents=True)
    shutil.copytree(SHARED / "comfyui-core/ComfyUI.git", served / "comfyanonymous/ComfyUI.git")
    packs = json.loads((SHARED / "node-packs-v2/manifest.json").read_text())
    for pack in packs["packs"]:
        if pack["url"] not in {n["locked"]["url"] for n in LOCK["nodes"].values()}:
            continue
        dest = served / pack["owner"] / f"{pack['name']}.git"
        src = SHARED / "node-packs-v2" / pack["path"]
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            subprocess.run(["git", "init", "-q", "--bare", str(dest)], check=True)
            subprocess.run(["git", "-C", str(dest), "fetch", "-q", str(src), "refs/*:refs/*"], check=True)
    for repo in served.glob("*/*.git"):
        subprocess.run(["git", "-C", str(repo), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
        repo.with_name(repo.name.removesuffix(".git")).symlink_to(repo.name)
    srv = GitServer(served)
    try:
        proj = tmp_path / "proj"
        shutil.copytree(ROOT / "versions/public", proj / "versions/public")
        (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
        for k, v in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.http://127.0.0.1:{srv.port}/.insteadOf",
                     "GIT_CONFIG_VALUE_0": "https://github.com/", "COMFYVER_CACHE": str(tmp_path / "cache"),
                     "COMFYVER_ROOT": str(proj)}.items():
            monkeypatch.setenv(k, v)
        rc = cli.main(["recheck", "public", "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.out + out.err
        assert len(srv.requests) > 0 and os.environ["COMFYVER_ROOT"] == str(proj)
    finally:
        srv.close()


def test_its_own_tests_load():
    """versions/public/tests/*.json: what `comfyver test public` and `deploy --test` run (schema-checked, the
    workflow named from versions/public/workflows)."""
    from comfyver.ship import versiontests

    tests = versiontests.load_tests(ROOT, "public")
    assert [t.name for t in tests] == ["invert"]
