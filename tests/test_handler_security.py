"""Handler defects from the third security review (issue 24: M2, L3, L10, L11, L15), each reproduced as found."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from handler.errors import JobError
from handler.settings import Settings
from handler.worker import Worker
from tests.handler import env


def E(r) -> dict:
    return json.loads(r["error"])


def ok(r):
    assert "error" not in r, json.dumps(r, indent=1)[:3000]
    return r


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return env.shared_worker(tmp_path_factory.mktemp("handler-comfy"))


def run_job(w, job_input, job_id="job-1"):
    return env.run(w.handle({"id": job_id, "input": job_input}))


# --- M2: lock_digest names the tree that runs; a changed mounted lock is realized again --------------------
def write_lock(root: Path, vid: str, rev_char: str) -> str:
    """A valid versions/<vid>/version.json whose ComfyUI rev is `rev_char` * 40; its lock digest."""
    from comfyver.base import lockfile
    core = {"type": "git", "url": "https://github.com/comfyanonymous/ComfyUI", "ref": "master"}
    lock = lockfile.empty(vid, core, {**core, "rev": rev_char * 40, "hash": "sha256-" + "A" * 43 + "=",
                                      "submodules": False})
    path = root / "versions" / vid / "version.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    lockfile.write(path, lock)
    return lockfile.lock_digest(lockfile.read(path))


def realizing_worker(tmp_path: Path, root: Path, monkeypatch):
    """A worker with COMFYVER_REALIZE=1 whose realize is a stand-in: it builds one tree from the mounted lock and
    records what it was built from in the marker, as realize does. Returns the worker, the stand-in and the
    digests it built, in order."""
    from comfyver.base import lockfile, project
    from comfyver.realize import realize as realize_mod

    tree = env.comfy_tree(tmp_path)
    built: list[str] = []

    def fake_realize(root_, vid, into=None, models_dir=None, offline=False, **kw):
        digest = lockfile.lock_digest(lockfile.read(project.lock_path(root_, vid)))
        (tree / realize_mod.MARKER).write_text(json.dumps({"id": vid, "lock": digest}))
        built.append(digest)
        return tree

    monkeypatch.setattr(realize_mod, "realize", fake_realize)
    w = Worker(Settings(comfy_home=tmp_path / "baked", comfy_port=env.free_port(), comfy_url=None,
                        output_mode="base64", comfy_state_dir=tmp_path / "state", versions_root=root, realize=True))
    return w, fake_realize, built


def test_lock_digest_is_the_realized_trees_and_a_changed_lock_is_realized_again(tmp_path, monkeypatch):
    """A `git pull` on the volume changes the mounted lock from d1 to d2 while the tree realized from d1 runs:
    a job naming d1 runs there; a job naming d2 without asking for the version is refused naming both; a job
    asking for the version with d2 gets it realized again and runs on the tree built from d2."""

    root = tmp_path / "proj"
    d1 = write_lock(root, "v", "a")
    w, _, built = realizing_worker(tmp_path, root, monkeypatch)
    wf = env.invert_workflow()
    try:
        ok(run_job(w, {"workflow": wf, "version_id": "v", "lock_digest": d1}))
        assert built == [d1]
        d2 = write_lock(root, "v", "b")  # the volume's lock changes; the tree from d1 still runs
        ok(run_job(w, {"workflow": wf, "version_id": "v", "lock_digest": d1}))  # d1 is what runs
        ok(run_job(w, {"workflow": wf, "lock_digest": d1}))
        e = E(run_job(w, {"workflow": wf, "lock_digest": d2}))  # what runs is not d2
        assert e["type"] == "version" and d2[:12] in e["message"] and d1[:12] in e["message"], e
        assert built == [d1]
        ok(run_job(w, {"workflow": wf, "version_id": "v", "lock_digest": d2}))  # realized again from d2
        assert built == [d1, d2]
        e = E(run_job(w, {"workflow": wf, "version_id": "v", "lock_digest": d1}))  # d1 no longer runs
        assert e["type"] == "version" and d2[:12] in e["message"] and d1[:12] in e["message"], e
    finally:
        env.run(w.client.close())
        w.close()



def test_the_running_lock_is_what_comfyui_loaded_not_the_marker_on_disk_now(tmp_path, monkeypatch):
    """Outside review of M2: with COMFYVER_REALIZE_DIR on a shared volume, another worker realizes the version
    from d2 into the same tree while this worker's ComfyUI still runs the d1 code: d1 must still run here and
    d2 be refused (the marker on disk already says d2)."""

    root = tmp_path / "proj"
    d1 = write_lock(root, "v", "a")
    w, fake_realize, _ = realizing_worker(tmp_path, root, monkeypatch)
    wf = env.invert_workflow()
    try:
        ok(run_job(w, {"workflow": wf, "version_id": "v", "lock_digest": d1}))
        d2 = write_lock(root, "v", "b")
        fake_realize(root, "v")  # the other worker, on the shared tree
        ok(run_job(w, {"workflow": wf, "lock_digest": d1}))
        e = E(run_job(w, {"workflow": wf, "lock_digest": d2}))
        assert e["type"] == "version" and d2[:12] in e["message"] and d1[:12] in e["message"], e
    finally:
        env.run(w.client.close())
        w.close()

# --- L3: a realize error tells the submitter nothing about the worker's files ---------------------------------
def test_a_realize_error_keeps_worker_file_facts_in_the_worker_log(worker, tmp_path, monkeypatch, caplog):
    from comfyver.base.errors import ComfyverError
    from comfyver.realize import realize as realize_mod

    blob = f"/runpod-volume/models/sha256/{'c' * 64}"
    said = (f"version v2: model checkpoints/x.safetensors: the lock says 1000 bytes, but the stored blob {blob} "
            f"whose bytes hash to the locked sha256 {'c' * 64} has 123456789")

    def failing(*a, **kw):
        raise ComfyverError(said, hint="fix models[...].locked.size in version.json")

    monkeypatch.setattr(realize_mod, "realize", failing)
    (tmp_path / "versions").mkdir()
    w = env.attached_worker(worker, realize=True, versions_root=tmp_path, comfy_url=None)
    w.client = worker.client
    with caplog.at_level(logging.INFO, logger="handler"):
        e = E(run_job(w, {"workflow": env.invert_workflow(), "version_id": "v2"}))
    assert e["type"] == "version" and "'v2'" in e["message"] and "realize failed" in e["message"], e
    shown = json.dumps(e)
    assert "123456789" not in shown and "c" * 64 not in shown and "/runpod-volume" not in shown, e
    assert "log" in e["hint"]
    assert said in caplog.text  # the worker's own log keeps the facts


# --- L10: outputs are never read through a link, and never whole before the size check ------------------------
@pytest.fixture
def idle_worker(tmp_path):
    """A worker whose ComfyUI is never started: _deliver reads its output folder directly."""
    w = Worker(Settings(comfy_home=tmp_path / "home", comfy_port=env.free_port(), comfy_url=None,
                        output_mode="base64", comfy_state_dir=tmp_path / "state"))
    w.settings.output_dir.mkdir(parents=True)
    return w


def deliver(w, filename, subfolder="", mode="base64", out_dir=None):
    ui = {"9": {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}
    return env.run(w._deliver(ui, mode, None, "", {"id": "j"}, out_dir))


@pytest.mark.parametrize("case", ["file link", "folder link", "fifo"])
def test_an_output_that_is_a_link_or_not_a_file_is_refused(idle_worker, tmp_path, case):
    out = idle_worker.settings.output_dir
    secret = tmp_path / "outside" / "id_rsa.png"
    secret.parent.mkdir()
    secret.write_bytes(b"PRIVATE KEY")
    if case == "file link":
        (out / "leak.png").symlink_to(secret)
        name, sub = "leak.png", ""
    elif case == "folder link":
        (out / "sub").symlink_to(secret.parent, target_is_directory=True)
        name, sub = "id_rsa.png", "sub"
    else:
        os.mkfifo(out / "pipe.png")  # opening it for reading would block the worker
        name, sub = "pipe.png", ""
    with pytest.raises(JobError) as exc:
        deliver(idle_worker, name, sub)
    e = exc.value.to_dict()
    assert e["node_id"] == "9" and name in e["message"] and "PRIVATE" not in json.dumps(e), e
    assert ("link" if "link" in case else "regular file") in e["message"], e


def test_a_large_output_is_refused_by_its_size_without_reading_it(idle_worker):
    big = idle_worker.settings.output_dir / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # sparse: 200 MiB to read, nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(JobError) as exc:
            deliver(idle_worker, "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.kind == "output_too_large", exc.value.to_dict()
    assert peak < 20 * 1024 * 1024, f"the worker allocated {peak / 2**20:.0f} MiB for a refused output"


def test_an_output_is_copied_to_a_folder_without_holding_it_in_memory(idle_worker, tmp_path):
    big = idle_worker.settings.output_dir / "big.png"
    with open(big, "wb") as fh:
        fh.seek(48 * 1024 * 1024)
        fh.write(b"end")
    tracemalloc.start()
    try:
        r = deliver(idle_worker, "big.png", mode="dir", out_dir=tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    [o] = r["outputs"]
    assert o["size"] == 48 * 1024 * 1024 + 3 and Path(o["path"]).stat().st_size == o["size"]
    assert peak < 20 * 1024 * 1024, f"the worker allocated {peak / 2**20:.0f} MiB to copy one output"


def test_an_output_only_comfyui_can_see_is_streamed_from_view(worker):
    """Attached without COMFY_HOME: outputs come over /view (into a temporary file, not memory)."""
    import base64
    w = env.attached_worker(worker, comfy_home=None, comfy_args=[])
    assert w.settings.output_dir is None
    try:
        r = ok(run_job(w, {"workflow": env.invert_workflow(0x102030, prefix="viewed"), "output_mode": "base64"}))
    finally:
        env.run(w.client.close())
    [o] = r["outputs"]
    assert base64.b64decode(o["data"])[:8] == b"\x89PNG\r\n\x1a\n" and o["size"] == len(base64.b64decode(o["data"]))


# --- L11: a list or dict where the UI file has a widget value is an input error naming the node ---------------
SAMPLER_INFO = {"KSampler": {"input": {"required": {
    "seed": ["INT", {"default": 0, "control_after_generate": True}], "steps": ["INT", {"default": 20}],
    "sampler_name": [["euler", "dpmpp_2m"]]}}, "input_order": {"required": ["seed", "steps", "sampler_name"]},
    "output": ["LATENT"]}}


@pytest.mark.parametrize("value", [["x"], {"a": 1}, ["7", 0]])
def test_a_list_or_dict_widget_value_after_a_seed_is_an_input_error(value):
    from handler.workflow import ui_to_api

    wf = {"nodes": [{"id": 3, "type": "KSampler", "inputs": [], "widgets_values": [5, value, 20, "euler"]}],
          "links": []}
    with pytest.raises(JobError) as exc:
        ui_to_api(wf, SAMPLER_INFO)
    e = exc.value.to_dict()
    assert e["type"] == "input" and e["node_id"] == "3" and "KSampler" in e["message"], e


def test_a_list_or_dict_widget_value_is_an_input_error_through_the_worker(worker):
    """The same through a job: `input`, not `internal`."""
    wf = {"nodes": [{"id": 3, "type": "KSampler", "inputs": [],
                     "widgets_values": [5, {"a": 1}, 20, 8.0, "euler", "normal", 1.0]}], "links": []}
    e = E(run_job(worker, {"workflow": wf, "output_mode": "base64"}))
    assert e["type"] == "input" and e["node_id"] == "3" and "KSampler" in e["message"], e


# --- L15: a stop that races the watcher's restart leaves no ComfyUI behind ----------------------------------------
FAKE_COMFYUI = """\
import argparse, http.server
p = argparse.ArgumentParser()
p.add_argument("--port", type=int)
port = p.parse_known_args()[0].port
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_a_stop_during_a_restart_leaves_no_comfyui_running(tmp_path):
    """ComfyUI died between jobs and the watcher is restarting it when the worker is stopped. The worker process
    exits right after close() (its daemon threads with it), so a ComfyUI started after close() is left behind."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "main.py").write_text(FAKE_COMFYUI)
    w = Worker(Settings(comfy_home=home, comfy_port=env.free_port(), comfy_url=None, output_mode="base64",
                        comfy_state_dir=tmp_path / "state", comfy_start_timeout=20))
    w.start()
    p = w.process
    real_start, restarting, go_on = p.start, threading.Event(), threading.Event()

    def start_when_told():
        restarting.set()
        go_on.wait(20)
        real_start()

    p.start = start_when_told
    starts = p.starts
    p.proc.kill()  # ComfyUI dies between jobs: the watcher restarts it
    assert restarting.wait(20)
    w.close()  # the worker is stopped while the restart is under way
    go_on.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (w._restart is not None and w._restart.done()):
        time.sleep(0.05)
    try:
        assert p.starts == starts, "a ComfyUI was started after the worker was stopped"
    finally:
        w.process.stop()
    assert not w.process.alive()


# --- outside review of L11: other ways a list reads as a link, or a job's shape gives `internal` ------------------
def test_a_link_shaped_value_from_a_primitive_or_a_dict_of_widgets_is_an_input_error():
    from handler.workflow import ui_to_api

    primitive = {"nodes": [{"id": 3, "type": "KSampler", "inputs": [{"name": "seed", "link": 1}],
                            "widgets_values": [5, "fixed", 20, "euler"]},
                           {"id": 2, "type": "PrimitiveNode", "widgets_values": [["2", 0]]}],
                 "links": [[1, 2, 0, 3, 0, "INT"]]}
    as_dict = {"nodes": [{"id": 3, "type": "KSampler", "inputs": [], "widgets_values": {"steps": ["2", 0]}}],
               "links": []}
    for wf, node in ((primitive, "2"), (as_dict, "3")):
        with pytest.raises(JobError) as exc:
            ui_to_api(wf, SAMPLER_INFO)
        e = exc.value.to_dict()
        assert e["type"] == "input" and e["node_id"] == node, e
    # a pack's own state in a dict of widgets (VHS_VideoCombine's videopreview) is still passed as it was
    state = {"nodes": [{"id": 3, "type": "KSampler", "inputs": [],
                        "widgets_values": {"steps": 4, "videopreview": {"hidden": False}}}], "links": []}
    assert ui_to_api(state, SAMPLER_INFO)["3"]["inputs"]["videopreview"] == {"hidden": False}


@pytest.mark.parametrize("inputs", [5, [1, 2], "abc", None])
def test_overrides_on_a_node_whose_inputs_are_not_an_object_are_an_input_error(inputs):
    from handler.workflow import apply_overrides

    prompt = {"3": {"class_type": "KSampler", "inputs": inputs}}
    with pytest.raises(JobError) as exc:
        apply_overrides(prompt, {"3": {"steps": 4}})
    e = exc.value.to_dict()
    assert e["type"] == "input" and e["node_id"] == "3", e
