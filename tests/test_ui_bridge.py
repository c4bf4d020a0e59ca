"""The bridge `comfyver ui` runs between the page's ComfyUI and the endpoint, with a stand-in backend: a final
status is shown only with its outputs in place, requests need the token, bad bodies are refused."""

from __future__ import annotations

import base64
import time

import requests
from comfyver.ship import jobclient
from comfyver.ui.bridge import Bridge

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 100).decode()


class DoneBackend:
    where = "test backend"

    def submit(self, job_input):
        self.input = job_input
        return "remote-1"

    def status(self, job_id):
        return {"status": "COMPLETED", "output": {"outputs": [
            {"node_id": "3", "kind": "image", "filename": "a.png", "data": PNG}]}}

    def cancel(self, job_id):
        return False


def test_a_completed_job_is_never_shown_before_its_outputs_are_saved(tmp_path, monkeypatch):
    real = jobclient.save_outputs
    monkeypatch.setattr(jobclient, "save_outputs", lambda *a: (time.sleep(0.5), real(*a))[1])
    backend = DoneBackend()
    bridge = Bridge(backend, "v1", "ab" * 32, tmp_path / "output")
    try:
        job = bridge.start({"1": {"class_type": "X", "inputs": {}}}, "p1")
        seen = []
        while job.status not in jobclient.FINAL_STATES:
            seen.append(bridge.view(job, 0))
            time.sleep(0.01)
        view = bridge.view(job, 0)
        assert view["status"] == "COMPLETED" and view["outputs"] == [
            {"node_id": "3", "kind": "image", "filename": "a.png", "subfolder": f"comfyver-remote/{job.id}"}]
        assert all(v["status"] != "COMPLETED" for v in seen)
        assert (tmp_path / "output" / "comfyver-remote" / job.id / "a.png").read_bytes()[:4] == b"\x89PNG"
        # the job carried the version and the lock it was made for
        assert backend.input["version_id"] == "v1" and backend.input["lock_digest"] == "ab" * 32
    finally:
        bridge.close()


def test_the_bridge_needs_its_token_and_a_prompt(tmp_path):
    bridge = Bridge(DoneBackend(), "v1", "ab" * 32, tmp_path)
    try:
        assert requests.post(bridge.url + "/jobs", json={"prompt": {}}, timeout=5).status_code == 401
        assert requests.post(bridge.url + "/jobs", json={"prompt": {}}, timeout=5,
                             headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {bridge.token}"}
        assert requests.post(bridge.url + "/jobs", data=b"not json", headers=auth, timeout=5).status_code == 400
        assert requests.post(bridge.url + "/jobs", json={"prompt": "x"}, headers=auth, timeout=5).status_code == 400
        assert requests.get(bridge.url + "/jobs/nope", headers=auth, timeout=5).status_code == 404
        r = requests.post(bridge.url + "/jobs", json={"prompt": {"1": {}}, "prompt_id": "p"}, headers=auth, timeout=5)
        assert r.ok and r.json()["id"] in bridge.jobs
    finally:
        bridge.close()


def test_the_prompt_id_never_chooses_where_outputs_are_written(tmp_path):
    """A page's POST /prompt may carry any prompt_id (ComfyUI keeps it as sent): an absolute path or `../..`
    must not move the outputs out of the output folder (issue 24 H1)."""
    out = tmp_path / "state" / "output"
    bridge = Bridge(DoneBackend(), "v1", "ab" * 32, out)
    evil = [str(tmp_path / "elsewhere"), "../../../escaped", "../x/../../y", "/", ".", ""]
    try:
        jobs = [bridge.start({"1": {"class_type": "X", "inputs": {}}}, pid) for pid in evil]
        for job in jobs:
            while job.status not in jobclient.FINAL_STATES:
                time.sleep(0.01)
            assert job.status == "COMPLETED", job.error
            [saved] = job.outputs
            assert saved["subfolder"] == f"comfyver-remote/{job.id}" and len(job.id) == 32
        written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
        assert written == sorted(f"state/output/comfyver-remote/{j.id}/a.png" for j in jobs)
    finally:
        bridge.close()


def test_a_non_ascii_token_is_refused_not_a_traceback(tmp_path):
    bridge = Bridge(DoneBackend(), "v1", "ab" * 32, tmp_path)
    try:
        r = requests.post(bridge.url + "/jobs", json={"prompt": {}}, timeout=5,
                          headers={"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")})
        assert r.status_code == 401
    finally:
        bridge.close()
