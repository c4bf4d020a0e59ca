"""The import chain on one install (issue 26): `comfyver import --from-install` of a working install with 5 nodes
and 5 models → `comfyver realize` elsewhere → `comfyver verify --deep` gives the same ComfyUI: the same revs, the
same model bytes, the Python set uv.lock names. The install's core is a small stand-in (its requirements: six) so
its Python set can be realized here; its sources are served by the test git server, as GitHub would serve them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from comfyver import cli

from tests.support.gitserver import git, make_repo
from tests.test_realize_helpers import FAKE_CORE

PACKS = [f"pack-{c}" for c in "abcde"]
GITIGNORE = "__pycache__/\n/models/\n/custom_nodes/\n!custom_nodes/example_node.py.example\n"  # ComfyUI's own rules
MODELS = {"checkpoints/base.safetensors": 400_000, "loras/style.safetensors": 30_000,
          "loras/people/face.safetensors": 20_000, "vae/ae.safetensors": 50_000, "upscale_models/x2.pth": 10_000}


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


def run(capsys, *args) -> tuple[int, dict]:
    rc = cli.main([*args, "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else {"stderr": out.err})


def head(d: Path) -> str:
    return git("rev-parse", "HEAD", cwd=d).strip()


def test_import_realize_elsewhere_verify_gives_the_same_comfyui(tmp_path, git_server, monkeypatch, capsys):
    work = tmp_path / "upstream"
    make_repo(work / "core", {**FAKE_CORE, ".gitignore": GITIGNORE})
    core_url = git_server.publish(work / "core", "ComfyUI")
    install = tmp_path / "pod" / "ComfyUI"
    git("clone", "-q", core_url, str(install))
    for i, name in enumerate(PACKS):
        files = {"__init__.py": f"NODE_CLASS_MAPPINGS = {{'Node{i}': object}}\n"}
        if i == 0:
            files["requirements.txt"] = "six\n"
        make_repo(work / name, files)
        git("clone", "-q", git_server.publish(work / name, name), str(install / "custom_nodes" / name))
    for key, size in MODELS.items():
        f = install / "models" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(hashlib.sha256(key.encode()).digest() * (size // 32))
    proj = tmp_path / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    monkeypatch.chdir(proj)
    monkeypatch.setenv("COMFYVER_MODELS", str(tmp_path / "store"))

    rc, res = run(capsys, "import", "pod", "--from-install", str(install))
    assert rc == 0, json.dumps(res, indent=1)
    lock = json.loads((proj / "versions/pod/version.json").read_text())
    assert sorted(lock["nodes"]) == PACKS and sorted(lock["models"]) == sorted(MODELS)

    elsewhere = tmp_path / "elsewhere"
    rc, res = run(capsys, "realize", "pod", "--into", str(elsewhere))
    assert rc == 0, res
    rc, res = run(capsys, "verify", "pod", "--dir", str(elsewhere), "--deep")
    assert rc == 0, res

    # the same ComfyUI: the install's revs, its model bytes, the Python set uv.lock names
    marker = json.loads((elsewhere / ".comfyver-realized.json").read_text())
    assert marker["comfyui"]["rev"] == head(install)
    assert {n: r["rev"] for n, r in marker["nodes"].items()} == {n: head(install / "custom_nodes" / n) for n in PACKS}
    for key in MODELS:
        assert (elsewhere / "models" / key).read_bytes() == (install / "models" / key).read_bytes(), key
    for name in PACKS:
        assert (elsewhere / "custom_nodes" / name / "__init__.py").read_bytes() == \
            (install / "custom_nodes" / name / "__init__.py").read_bytes()
    six = subprocess.run([str(elsewhere / ".venv/bin/python"), "-c", "import six; print(six.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert f'name = "six"\nversion = "{six}"' in (proj / "versions/pod/uv.lock").read_text()
