"""`comfyver check`: a locked version passes; each kind of drift fails with exit 1 and names the item."""

from __future__ import annotations

import json
import shutil

import yaml
from comfyver.base import lockfile

from tests.test_lock_workflow import base_args, env, run  # noqa: F401  (fixture)

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _locked(env, capsys, python=False):
    sam_url, _ = env.files["sam_b.pth"]
    args = [a for a in base_args(env) if not (python and a == "--no-python")]
    rc, out, err = run(capsys, *args, "--choose", "SharedText=comfyui-b", "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 0, out + err
    return env.root / "versions" / "demo"


def test_check_passes_then_fails_on_each_drift(env, capsys):
    vdir = _locked(env, capsys, python=True)
    rc, out, _ = run(capsys, "check", "--json")
    assert rc == 0, out
    assert json.loads(out)["versions"]["demo"] == {"ok": True, "problems": []}

    # a node removed from the lock: its workflow classes are no longer covered
    lock = lockfile.read(vdir / "version.json")
    saved = json.loads(json.dumps(lock))
    del lock["nodes"]["comfyui-fancy"]
    lockfile.write(vdir / "version.json", lock)
    rc, out, _ = run(capsys, "check", "demo", "--json")
    probs = json.loads(out)["versions"]["demo"]["problems"]
    assert rc == 1
    items = {p["item"] for p in probs}
    assert "node comfyui-fancy" in items  # FancySAMLoader is still known from the manager map
    assert "pyproject.toml" in items      # its requirements are gone from the Python lock
    lockfile.write(vdir / "version.json", saved)

    # a model removed
    lock = json.loads(json.dumps(saved))
    del lock["models"]["loras/detail.safetensors"]
    lockfile.write(vdir / "version.json", lock)
    rc, out, _ = run(capsys, "check", "--json", "--no-python")
    assert rc == 1 and [p["item"] for p in json.loads(out)["versions"]["demo"]["problems"]] == ["model loras/detail.safetensors"]
    lockfile.write(vdir / "version.json", saved)

    # uv.lock made from another pyproject
    ul = vdir / "uv.lock"
    good = ul.read_text()
    ul.write_text(good.replace('{ name = "numpy" }', '{ name = "numpy", specifier = "<2" }'))
    rc, out, _ = run(capsys, "check", "--json")
    assert rc == 1 and json.loads(out)["versions"]["demo"]["problems"][0]["item"] == "uv.lock"
    ul.write_text(good)

    # a workflow file nobody listed, and a listed one deleted
    shutil.copy(vdir / "workflows" / "flow.json", vdir / "workflows" / "extra.json")
    (vdir / "workflows" / "flow.json").unlink()
    rc, out, _ = run(capsys, "check")
    assert rc == 1 and "workflows/extra.json: in workflows/ but not in the lock" in out
    assert "workflows/flow.json: listed in the lock but missing" in out


def test_check_invalid_lock(env, capsys):
    vdir = env.root / "versions" / "broken"
    vdir.mkdir()
    (vdir / "version.json").write_text('{"schema": 1, "id": "broken"}')
    rc, out, _ = run(capsys, "check", "--json")
    assert rc == 1
    p = json.loads(out)["versions"]["broken"]["problems"][0]
    assert p["item"] == "version.json" and "required property" in p["problem"]


def test_example_ci_workflow_runs_comfyver_check():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "comfyver-check.yml").read_text())
    steps = wf["jobs"]["check"]["steps"]
    assert any(s.get("run") == "comfyver check" for s in steps)
    assert any("pip install" in s.get("run", "") for s in steps)
