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
