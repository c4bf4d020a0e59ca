"""COMFY_WARMUP: a job the worker runs once before it takes jobs (issue 25), through the runpod SDK's local API
(`python -m handler --rp_serve_api`) and a real ComfyUI on the CPU."""

from __future__ import annotations

import json

import pytest
import requests

from tests.handler import env


def test_the_warm_up_job_runs_before_the_first_job(tmp_path):
    warm = tmp_path / "warmup.json"
    warm.write_text(json.dumps({"input": {"workflow": env.invert_workflow(size=8, prefix="warm")}}))
    port = env.free_port()
    api = env.LocalAPI({"COMFY_HOME": str(env.comfy_tree(tmp_path)), "COMFY_PORT": str(port), "OUTPUT_MODE": "base64",
                        "COMFY_WARMUP": str(warm)}, tmp_path / "api.log")
    try:
        # the local API answers only after the warm-up: ComfyUI has run exactly that prompt, nothing else yet
        history = requests.get(f"http://127.0.0.1:{port}/history", timeout=10).json()
        assert len(history) == 1
        [entry] = history.values()
        assert entry["status"]["status_str"] == "success"
        assert "warm-up job done in" in (tmp_path / "api.log").read_text()
        result = api.runsync({"workflow": env.invert_workflow(size=8, prefix="real")})
        assert result["status"] == "COMPLETED", result
        assert [o["filename"].startswith("real") for o in result["output"]["outputs"]] == [True]
    finally:
        api.stop()


@pytest.mark.parametrize("content, needle", [
    ("{not json", "cannot read it"),
    (json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}), "the warm-up job failed"),
])
def test_a_warm_up_that_fails_stops_the_worker_naming_the_file(tmp_path, content, needle):
    warm = tmp_path / "warmup.json"
    warm.write_text(content)
    with pytest.raises(RuntimeError) as info:
        env.LocalAPI({"COMFY_HOME": str(env.comfy_tree(tmp_path)), "COMFY_PORT": str(env.free_port()),
                      "OUTPUT_MODE": "base64", "COMFY_WARMUP": str(warm)}, tmp_path / "api.log")
    assert f"COMFY_WARMUP={warm}" in str(info.value) and needle in str(info.value)


# --- the version's own warm-up: versions/<id>/warmup.json -------------------------------------------------------
def _submit(queue, job_input: dict) -> str:
    return requests.post(f"{queue.url}/v2/ep/run", json={"input": job_input}, timeout=10).json()["id"]


def _prefixes_run(port: int) -> list[str]:
    """The filename prefix of every prompt ComfyUI has run, in the order it ran them (its history keeps that order)."""
    out = []
    for entry in requests.get(f"http://127.0.0.1:{port}/history", timeout=10).json().values():
        [image] = entry["outputs"]["3"]["images"]
        out.append(image["filename"].rsplit("_", 2)[0])
    return out


@pytest.mark.parametrize("given", ["mounted", "image", "mounted+COMFY_WARMUP"])
def test_the_versions_warm_up_runs_before_the_first_job_and_COMFY_WARMUP_wins(tmp_path, given):
    """A version's warmup.json (in the versions mounted at COMFYVER_ROOT, or the image's copy its launcher names in
    COMFYVER_WARMUP) is run at start, before the job already waiting in the queue; COMFY_WARMUP, when set, is run
    instead. Through the SDK's production worker loop (`python -m handler`)."""
    import time

    from tests.support.jobqueue import JobQueue, handler_worker

    vdir = tmp_path / "project" / "versions" / "v1"
    vdir.mkdir(parents=True)
    (vdir / "warmup.json").write_text(json.dumps({"input": {"workflow": env.invert_workflow(size=8, prefix="version")}}))
    port = env.free_port()
    wenv = {"COMFY_HOME": str(env.comfy_tree(tmp_path)), "COMFY_PORT": str(port), "OUTPUT_MODE": "base64",
            "COMFYVER_VERSION_ID": "v1"}
    if given == "image":  # the image's launcher: its store copy of versions/<id>/warmup.json, no checkout mounted
        image_copy = tmp_path / "store-warmup.json"
        image_copy.write_text(json.dumps(env.invert_workflow(size=8, prefix="image")))  # a bare workflow
        wenv["COMFYVER_WARMUP"] = str(image_copy)
    else:
        wenv["COMFYVER_ROOT"] = str(tmp_path / "project")
    if given.endswith("COMFY_WARMUP"):
        (tmp_path / "env-warmup.json").write_text(json.dumps({"input": {"workflow": env.invert_workflow(
            size=8, prefix="env")}}))
        wenv["COMFY_WARMUP"] = str(tmp_path / "env-warmup.json")
    queue = JobQueue()
    job_id = _submit(queue, {"workflow": env.invert_workflow(size=8, prefix="real")})  # waiting before the worker starts
    log = tmp_path / "worker.log"
    try:
        with handler_worker(queue, wenv, log, "ep") as proc:
            deadline = time.monotonic() + 180
            while queue.jobs[job_id]["status"] in ("IN_QUEUE", "IN_PROGRESS"):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            assert queue.jobs[job_id]["status"] == "COMPLETED", queue.jobs[job_id]
            warm = {"mounted": "version", "image": "image", "mounted+COMFY_WARMUP": "env"}[given]
            assert _prefixes_run(port) == [warm, "real"]
            assert "warm-up job done in" in log.read_text()
    finally:
        queue.close()


@pytest.mark.parametrize("where", ["mounted", "image"])
def test_a_versions_warm_up_that_fails_stops_the_worker_naming_the_file(tmp_path, where):
    vdir = tmp_path / "project" / "versions" / "v1"
    vdir.mkdir(parents=True)
    warm = vdir / "warmup.json"
    warm.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    wenv = {"COMFY_HOME": str(env.comfy_tree(tmp_path)), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
            "COMFYVER_VERSION_ID": "v1"}
    wenv.update({"COMFYVER_ROOT": str(tmp_path / "project")} if where == "mounted" else {"COMFYVER_WARMUP": str(warm)})
    with pytest.raises(RuntimeError) as info:
        env.LocalAPI(wenv, tmp_path / "api.log")
    assert str(warm) in str(info.value) and "the warm-up job failed" in str(info.value)
    assert "NoSuchNode" in str(info.value)
