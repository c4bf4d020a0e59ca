"""The full loop with progress and cancel: `comfyver run --endpoint` (runpod SDK `Endpoint`) -> a local job
queue -> the real handler in the runpod SDK's production worker loop (`python -m handler`, no --rp_serve_api)
-> a real ComfyUI on the CPU.

RunPod's queue cannot run here: `tests.support.jobqueue.JobQueue` plays its two documented sides on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.handler import env
from tests.support.jobqueue import JobQueue, handler_worker
from tests.support.procs import Watched

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("worker-loop")
    home = env.comfy_tree(base)
    q = JobQueue()
    worker_env = {"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64"}
    with handler_worker(q, worker_env, base / "worker.log", "ep-loop") as proc:
        q.worker, q.log_path = proc, base / "worker.log"
        yield q
    q.close()
    # a terminated worker takes its ComfyUI along (no orphan keeps the port)
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(worker_env["COMFY_PORT"]))) != 0, "ComfyUI outlived its worker"


@pytest.fixture
def client_env(platform, monkeypatch):
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", platform.url + "/v2")
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_LOOPKEY_000")
    return {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}


def run_cli(args: list[str], envv: dict, **kw) -> Watched:
    return Watched([sys.executable, "-m", "comfyver", "run", "--endpoint", "ep-loop", *args], env=envv, **kw)


def test_progress_and_outputs(platform, client_env, tmp_path):
    from comfyver.ship import jobclient

    (tmp_path / "wf.json").write_text(json.dumps(env.slow_workflow(seconds=3, steps=6, color=0x102030)))
    seen = []
    res = jobclient.run_job(jobclient.RunPodBackend("ep-loop"), jobclient.build_input(tmp_path / "wf.json"),
                            tmp_path / "out", poll=0.1, timeout=240, on_progress=seen.append)
    assert res.status == "COMPLETED", (res.error, platform.log_path.read_text()[-3000:])
    # the handler's own progress updates, read back through the status endpoint
    steps = [p.completed for p in seen if p.total == 6]
    assert steps and steps == sorted(steps) and max(steps) >= 3
    assert any(p.text == "node 2" for p in seen)
    [saved] = res.files
    # the SDK does not log job results (base64 PNG payloads start with iVBORw0KGgo) at the worker's level
    assert "iVBORw0KGgo" not in platform.log_path.read_text()
    from PIL import Image
    assert Image.open(io.BytesIO(Path(saved["path"]).read_bytes())).convert("RGB").getpixel((0, 0)) == (0x10, 0x20, 0x30)


def test_ctrl_c_cancels_a_long_job_on_the_worker(platform, client_env, tmp_path):
    (tmp_path / "slow.json").write_text(json.dumps(env.slow_workflow(seconds=60, steps=60)))
    proc = run_cli([str(tmp_path / "slow.json"), "--poll", "0.2", "--out", str(tmp_path / "out")], client_env)
    proc.wait_line("submitted job", timeout=60)  # Ctrl-C lands while following, not during start-up
    proc.until(lambda: any(j["status"] == "IN_PROGRESS" and j.get("output") for j in platform.jobs.values()),
               120, f"the job running on the worker (worker log: {platform.log_path})")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "CANCELLED" in out and "job cancelled" in err
    # the worker stopped the job: the next one runs at once instead of after the 60 s node
    (tmp_path / "quick.json").write_text(json.dumps(env.invert_workflow(size=8)))
    t0 = time.monotonic()
    quick = run_cli([str(tmp_path / "quick.json"), "--poll", "0.2", "--out", str(tmp_path / "out2"), "--json"],
                    client_env)
    qout, qerr = quick.communicate(timeout=120)
    assert quick.returncode == 0, (qout, qerr, platform.log_path.read_text()[-3000:])
    assert time.monotonic() - t0 < 40
    assert json.loads(qout)["status"] == "COMPLETED"
