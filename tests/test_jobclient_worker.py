"""The full loop with progress and cancel: `comfyver run --endpoint` (runpod SDK `Endpoint`) -> a local job
queue -> the real handler in the runpod SDK's production worker loop (`python -m handler`, no --rp_serve_api)
-> a real ComfyUI on the CPU.

RunPod's queue cannot run here, so `JobQueue` plays its two documented sides on 127.0.0.1:
- the client API (https://docs.runpod.io/serverless/endpoints/operation-reference):
  POST /v2/{endpoint}/run, GET /v2/{endpoint}/status/{job}, POST /v2/{endpoint}/cancel/{job};
- the worker side the SDK speaks (runpod/serverless/modules/rp_job.py, rp_http.py): GET job-take
  ($RUNPOD_WEBHOOK_GET_JOB), long-poll job-stop (same URL, /job-stop/), POST job-done
  ($RUNPOD_WEBHOOK_POST_OUTPUT) for progress updates (status IN_PROGRESS) and the final result.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.handler import env
from tests.support.procs import Watched

ROOT = Path(__file__).resolve().parents[1]


class JobQueue:
    def __init__(self):
        self.lock = threading.Condition()
        self.queue: list[str] = []
        self.jobs: dict[str, dict] = {}
        self.progress_posts: list[dict] = []
        self.to_stop: list[str] = []
        queue = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, obj=None):
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.route("GET")

            def do_POST(self):
                self.route("POST")

            def route(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path).path.strip("/").split("/")  # v2, endpoint, verb, ...
                status, obj = queue.handle(method, parts[2], parts[3:], body)
                self.reply(status, obj)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, method, verb, rest, body):
        with self.lock:
            if verb == "run" and method == "POST":  # client: submit
                job_id = f"job-{uuid.uuid4().hex[:8]}"
                self.jobs[job_id] = {"id": job_id, "status": "IN_QUEUE", "input": json.loads(body)["input"]}
                self.queue.append(job_id)
                self.lock.notify_all()
                return 200, {"id": job_id, "status": "IN_QUEUE"}
            if verb == "status" and method == "GET":  # client: poll
                job = self.jobs.get(rest[0])
                if not job:
                    return 404, {"error": "request does not exist"}
                return 200, {k: job[k] for k in ("id", "status", "output", "error") if k in job}
            if verb == "cancel" and method == "POST":  # client: cancel
                job = self.jobs[rest[0]]
                if job["status"] == "IN_PROGRESS":
                    self.to_stop.append(job["id"])
                job["status"] = "CANCELLED"
                job.pop("output", None)
                self.lock.notify_all()
                return 200, {"id": job["id"], "status": "CANCELLED"}
            if verb == "job-take":  # worker: take a job (204 = none)
                self.lock.wait_for(lambda: self.queue, timeout=1)
                while self.queue:
                    job = self.jobs[self.queue.pop(0)]
                    if job["status"] == "IN_QUEUE":
                        job["status"] = "IN_PROGRESS"
                        return 200, {"id": job["id"], "input": job["input"]}
                return 204, None
            if verb == "job-stop":  # worker: long-poll for jobs to stop
                self.lock.wait_for(lambda: self.to_stop, timeout=1)
                ids, self.to_stop = self.to_stop, []
                return (200, {"jobsToStop": ids}) if ids else (204, None)
            if verb == "job-done" and method == "POST":  # worker: progress update or result
                job = self.jobs[rest[1]]
                data = json.loads(body)
                if data.get("status") == "IN_PROGRESS":
                    self.progress_posts.append(data["output"])
                    if job["status"] == "IN_PROGRESS":
                        job["output"] = data["output"]
                elif job["status"] != "CANCELLED":
                    job["status"] = "FAILED" if data.get("error") else "COMPLETED"
                    job.update({k: data[k] for k in ("output", "error") if k in data})
                return 200, {}
        return 404, {"error": f"no route {method} {verb}"}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("worker-loop")
    home = env.comfy_tree(base)
    q = JobQueue()
    log = open(base / "worker.log", "wb")
    worker_env = {**os.environ, "COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
                  "RUNPOD_WEBHOOK_GET_JOB": f"{q.url}/v2/ep-loop/job-take/$ID?gpu=cpu",
                  "RUNPOD_WEBHOOK_POST_OUTPUT": f"{q.url}/v2/ep-loop/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
                  "RUNPOD_POD_ID": "worker-1", "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
                  "RUNPOD_SKIP_GPU_CHECK": "true", "RUNPOD_AI_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "handler"], cwd=ROOT, env=worker_env, stdout=log,
                            stderr=subprocess.STDOUT)
    q.worker, q.log_path = proc, base / "worker.log"
    yield q
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
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
