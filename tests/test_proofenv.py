"""issue 28, the proven lock: `comfyver lock` proves a draft in the version's own Python environment (lock/proofenv.py),
made from the draft's uv.lock with real wheels (PyPI's CUDA torch, which loads on the CPU), not in the interpreter
comfyver runs in. The core is the real ComfyUI history (../shared/data/comfyui-core) at v0.3.75.

Before: without `--probe PYTHON` a lock was never proven (static scan only), and `--probe` with comfyver's own
interpreter passed a pack that imports a package the version does not install."""

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
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)

NODE = ("class ProofNode:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        return {'required': {'text': ('STRING', {})}}\n"
        "    RETURN_TYPES = ('STRING',)\n"
        "    FUNCTION = 'f'\n"
        "    OUTPUT_NODE = True\n"
        "    def f(self, text):\n"
        "        return (text,)\n"
        "NODE_CLASS_MAPPINGS = {'ProofNode': ProofNode}\n")
# pytest is in comfyver's test environment, never in a version's requirements unless declared. As Comfyroll does with
# matplotlib, the pack swallows the ImportError and then fails on a NameError that does not name the module.
UNDECLARED = {"__init__.py": "try:\n    from pytest import approx\nexcept ImportError:\n    pass\n" + NODE + "approx(1)\n"}


@pytest.fixture
def real(env, tmp_path, monkeypatch):
    """The real ComfyUI history served, a pack that imports pytest without declaring it, a workflow using it."""
    core = env.git_server.bare("ComfyUI-real")
    shutil.copytree(nodepacks.CORE, core, symlinks=True)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=core)
    make_repo(tmp_path / "ComfyUI-Undeclared", UNDECLARED, "imports pytest", tag="v1.0.0")
    url = env.git_server.publish(tmp_path / "ComfyUI-Undeclared", "ComfyUI-Undeclared")
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({url: [["ProofNode"], {"title_aux": "Undeclared"}]}))
    nodemap.manager.cache_clear()
    wf = tmp_path / "proof.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "ProofNode", "mode": 0, "widgets_values": ["hi"]}],
                              "links": []}))
    monkeypatch.setenv(proofenv.ENV_VAR, "1")
    return ["--workflow", str(wf), "--comfyui-url", env.git_server.url("ComfyUI-real"), "--comfyui-ref", "v0.3.75",
            "--offline-registry", "--json"]


def _envs() -> list[Path]:
    return sorted(p for p in proofenv.root().iterdir() if not p.name.startswith("."))


def test_lock_proves_in_the_versions_own_environment(env, capsys, real):
    # proven in comfyver's interpreter (which has pytest) the pack imports: kinder than the version's environment
    rc, out, err = run(capsys, "lock", "kind", *real, "--no-python", "--probe", sys.executable)
    assert rc == 0, out + err

    # no --probe: the lock makes the version's environment from its uv.lock and ComfyUI loads the pack there
    rc, out, err = run(capsys, "lock", "pe", *real)
    res = json.loads(out)
    assert rc == 1, out + err
    assert [p["item"] for p in res["problems"]] == ["class ProofNode"], res["problems"]
    [note] = [n for n in res["notes"] if "fails to import" in n]
    assert "name 'approx' is not defined" in note and "it imports pytest, which the version's environment" in note
    assert "--pip pytest" in note
    assert not project.lock_path(env.root, "pe").exists()  # nothing written
    [made] = _envs()
    assert (made / ".venv" / "bin" / "python").exists() and "torch" in (made / "uv.lock").read_text()

    # declared with --pip: proven in an environment that has it, and written with exactly that uv.lock
    rc, out, err = run(capsys, "lock", "pe", *real, "--pip", "pytest")
    res = json.loads(out)
    assert rc == 0, out + err
    assert res["knowledge"] == "probe"
    assert any(n.startswith("proven in the version's own Python environment (made in") for n in res["notes"]), res["notes"]
    envs = _envs()
    assert len(envs) == 2
    vdir = env.root / "versions" / "pe"
    [with_pytest] = [e for e in envs if (e / "uv.lock").read_text() == (vdir / "uv.lock").read_text()]
    assert 'name = "pytest"' in (with_pytest / "uv.lock").read_text()

    # `check` gives the proof's verdict; a warm re-lock reuses the environment and makes nothing
    assert cli.main(["check", "pe", "--json"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    rc, out, err = run(capsys, "lock", "pe", "--offline-registry", "--json")  # its own workflows, nodes and --pip
    assert rc == 0, out + err
    assert any(n.startswith("proven in the version's own Python environment (reused") for n in json.loads(out)["notes"])
    assert _envs() == envs

    # --no-verify waives the proof: no environment is made or looked up (the recorded proof of this uv.lock stands)
    rc, out, err = run(capsys, "lock", "pe", "--offline-registry", "--json", "--no-verify")
    res = json.loads(out)
    assert rc == 0, out + err
    assert not any(n.startswith("proven in the version's own") for n in res["notes"]) and res["knowledge"] == "probe"
    assert _envs() == envs
