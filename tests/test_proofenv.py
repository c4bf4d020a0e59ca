"""issue 28, the proven lock: `comfyver lock` proves a draft in the version's own Python environment (lock/proofenv.py),
made from the draft's uv.lock with real wheels (PyPI's CUDA torch, which loads on the CPU), not in the interpreter
comfyver runs in. The core is the real ComfyUI history (../shared/data/comfyui-core) at v0.3.75.

Before: without `--probe PYTHON` a lock was never proven (static scan only), and `--probe` with comfyver's own
interpreter passed a pack that imports a package the version does not install; then (aa3b33b) the plain lock
refused such a pack and named `--pip`; now the lock declares the package it imports (python.extra) when that
makes it load, and names the fix when nothing does."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import project
from comfyver.lock import nodemap, proofenv

from tests.support import nodepacks
from tests.support.gitserver import git, make_repo
from tests.test_lock_fit import string_node
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)

NODE = string_node("ProofNode") + "NODE_CLASS_MAPPINGS = {'ProofNode': ProofNode}\n"


# pytest is in comfyver's test environment, never in a version's requirements unless declared. As Comfyroll does with
# matplotlib, the pack swallows the ImportError and then fails on a NameError that does not name the module.
def _swallowing(module: str) -> dict[str, str]:
    return {"__init__.py": f"try:\n    from {module} import approx\nexcept ImportError:\n    pass\n" + NODE + "approx(1)\n"}


UNDECLARED = _swallowing("pytest")
NOT_ON_PYPI = _swallowing("comfyver_no_such_module_q7")  # no package of that name exists


@pytest.fixture
def real(env, tmp_path, monkeypatch):
    """The real ComfyUI history served and a workflow using ProofNode; `pack(files)` serves the pack providing it."""
    core = env.git_server.bare("ComfyUI-real")
    shutil.copytree(nodepacks.CORE, core, symlinks=True)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=core)
    wf = tmp_path / "proof.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "ProofNode", "mode": 0, "widgets_values": ["hi"]}],
                              "links": []}))
    monkeypatch.setenv(proofenv.ENV_VAR, "1")

    def pack(files: dict[str, str]) -> None:
        make_repo(tmp_path / "ComfyUI-Undeclared", files, "imports what it does not list", tag="v1.0.0")
        url = env.git_server.publish(tmp_path / "ComfyUI-Undeclared", "ComfyUI-Undeclared")
        mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
        (mgr / "extension-node-map.json").write_text(json.dumps({url: [["ProofNode"], {"title_aux": "Undeclared"}]}))
        nodemap.manager.cache_clear()

    args = ["--workflow", str(wf), "--comfyui-url", env.git_server.url("ComfyUI-real"), "--comfyui-ref", "v0.3.75",
            "--offline-registry", "--json"]
    return pack, args


def _envs() -> list[Path]:
    return sorted(p for p in proofenv.root().iterdir() if not p.name.startswith("."))


def test_lock_proves_in_the_versions_own_environment(env, capsys, real):
    pack, args = real
    pack(UNDECLARED)
    # proven in comfyver's interpreter (which has pytest) the pack imports: kinder than the version's environment
    rc, out, err = run(capsys, "lock", "kind", *args, "--no-python", "--probe", sys.executable)
    assert rc == 0, out + err

    # no --probe: the lock makes the version's environment from its uv.lock; ComfyUI cannot load the pack there
    # (pytest missing), so the lock declares it, loads the pack in the environment made with it, and writes that
    rc, out, err = run(capsys, "lock", "pe", *args)
    res = json.loads(out)
    assert rc == 0, out + err
    assert res["knowledge"] == "probe" and res["python"]["extra"] == ["pytest"]
    assert any(n.startswith("python.extra: pytest declared for comfyui-undeclared, which imports it without listing")
               for n in res["notes"]), res["notes"]
    assert any(n.startswith("proven in the version's own Python environment (made in") for n in res["notes"]), res["notes"]
    envs = _envs()
    assert len(envs) == 2  # the draft's, and the draft's with pytest
    vdir = env.root / "versions" / "pe"
    [with_pytest] = [e for e in envs if (e / "uv.lock").read_text() == (vdir / "uv.lock").read_text()]
    assert 'name = "pytest"' in (with_pytest / "uv.lock").read_text() and (with_pytest / ".venv/bin/python").exists()

    # `check` gives the proof's verdict; a warm re-lock reuses the environment and makes nothing
    assert cli.main(["check", "pe", "--json"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    rc, out, err = run(capsys, "lock", "pe", "--offline-registry", "--json")  # its own workflows, nodes and extra
    assert rc == 0, out + err
    assert any(n.startswith("proven in the version's own Python environment (reused") for n in json.loads(out)["notes"])
    assert _envs() == envs

    # --no-verify waives the proof: no environment is made or looked up (the recorded proof of this uv.lock stands)
    rc, out, err = run(capsys, "lock", "pe", "--offline-registry", "--json", "--no-verify")
    res = json.loads(out)
    assert rc == 0, out + err
    assert not any(n.startswith("proven in the version's own") for n in res["notes"]) and res["knowledge"] == "probe"
    assert _envs() == envs


def test_a_module_no_package_provides_is_a_problem_with_its_fix(env, capsys, real):
    pack, args = real
    pack(NOT_ON_PYPI)
    rc, out, err = run(capsys, "lock", "nope", *args)
    res = json.loads(out)
    assert rc == 1, out + err
    assert [p["item"] for p in res["problems"]] == ["class ProofNode"], res["problems"]
    assert any(n.startswith("declaring comfyver_no_such_module_q7 for the packs that import them failed")
               for n in res["notes"]), res["notes"]
    [note] = [n for n in res["notes"] if "fails to import" in n]
    assert "name 'approx' is not defined" in note and "it imports comfyver_no_such_module_q7" in note
    assert "--pip comfyver_no_such_module_q7" in note
    assert not project.lock_path(env.root, "nope").exists()  # nothing written
