"""RunPod's job queue on 127.0.0.1, both of its documented sides, in front of a real worker.

- the client API (https://docs.runpod.io/serverless/endpoints/operation-reference):
  POST /v2/{endpoint}/run, GET /v2/{endpoint}/status/{job}, POST /v2/{endpoint}/cancel/{job};
- the worker side the SDK speaks (runpod/serverless/modules/rp_job.py, rp_http.py): GET job-take
  ($RUNPOD_WEBHOOK_GET_JOB), long-poll job-stop (same URL, /job-stop/), POST job-done
  ($RUNPOD_WEBHOOK_POST_OUTPUT) for progress updates (status IN_PROGRESS) and the final result.

`worker_env(endpoint)` gives the variables that point a worker (`python -m handler`, or an image's
entrypoint) at it; `handler_worker` runs this repository's worker on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]


class JobQueue:
    def __init__(self):
        self.lock = threading.Condition()
        self.queue: list[str] = []
        self.jobs: dict[str, dict] = {}
        self.progress_posts: list[dict] = []
        self.to_stop: list[str] = []
        self.takes = 0  # job-take requests seen: a worker is polling
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
                self.takes += 1
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

    def worker_env(self, endpoint: str, pod: str = "worker-1") -> dict[str, str]:
        """What the SDK's production worker loop reads to take jobs from this queue (no GPU checks)."""
        return {"RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/v2/{endpoint}/job-take/$ID?gpu=cpu",
                "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/v2/{endpoint}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
                "RUNPOD_POD_ID": pod, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
                "RUNPOD_AI_API_KEY": ""}


@contextlib.contextmanager
def handler_worker(queue: JobQueue, env: dict[str, str], log: Path, endpoint: str = "any") -> Iterator[subprocess.Popen]:
    """`python -m handler` (the runpod SDK's production worker loop) taking jobs from `queue`, with `env` over this
    process's environment, its output in `log`; stopped (SIGTERM, then SIGKILL after 15 s) on leaving."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "handler"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, **queue.worker_env(endpoint)})
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
