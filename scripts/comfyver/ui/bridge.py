"""The comfyver side of `comfyver ui`: a small HTTP server on 127.0.0.1 that the page's ComfyUI hands each
validated prompt to. It submits the prompt to the endpoint (jobclient backends: RunPod or the SDK's local
API) with the version id and lock digest, follows the job, keeps its progress as events, saves the outputs
into ComfyUI's output folder (`comfyver-remote/<job id>/`, a folder the bridge names: the prompt id is the
sender's text and never part of a path) and cancels on request.

Requests need the bearer token made at start (any local process could reach the port otherwise). The API
key lives in this process only. Prompts run one at a time, in the order ComfyUI queues them.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from comfyver.base import web
from comfyver.base.errors import ComfyverError
from comfyver.ship import jobclient

OUTPUT_SUBFOLDER = "comfyver-remote"


@dataclass
class Job:
    id: str
    prompt_id: str
    status: str = "IN_QUEUE"
    remote_id: str | None = None
    events: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    error: str | None = None
    node_id: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Bridge:
    def __init__(self, backend, version_id: str, lock_digest: str, output_dir: Path, poll: float = 1.0):
        self.backend, self.version_id, self.lock_digest = backend, version_id, lock_digest
        self.output_dir, self.poll = Path(output_dir), poll
        self.token = secrets.token_urlsafe(24)
        self.jobs: dict[str, Job] = {}
        self.submitted = 0  # remote submissions, for tests and the summary
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="ui-bridge").start()

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        self._server.shutdown()
        self._server.server_close()

    # --- one job ------------------------------------------------------------------------------------
    def start(self, prompt: dict, prompt_id: str) -> Job:
        job = Job(uuid.uuid4().hex, str(prompt_id))
        self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, prompt), daemon=True, name=f"ui-job-{job.id[:8]}").start()
        return job

    def _run(self, job: Job, prompt: dict) -> None:
        # outputs come as the worker is configured (base64, gcs, s3): save_outputs fetches each kind
        job_input = {"workflow": prompt, "version_id": self.version_id, "lock_digest": self.lock_digest}
        try:
            job.remote_id = self.backend.submit(job_input)
            self.submitted += 1
            job.status = "IN_PROGRESS"
            status, output, error = jobclient.outcome(self._follow(job))
            if status == "COMPLETED":
                job.outputs = self._save(job, output if isinstance(output, dict) else {})
            elif error:
                job.error = web.redact(jobclient.describe_error(error))
                job.node_id = error.get("node_id") if isinstance(error, dict) else None
            job.status = status  # last: whoever sees a final status finds its outputs or error in place
        except ComfyverError as exc:
            job.status, job.error = "FAILED", web.redact(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        except Exception as exc:  # never leave the page waiting
            job.status, job.error = "FAILED", web.redact(f"{type(exc).__name__}: {exc}")

    def _follow(self, job: Job) -> dict:
        """Poll the job's status: at once, then every 50 ms growing to `poll` s (quick jobs come back quickly,
        long ones cost about one status call a second)."""
        delay = 0.05
        while True:
            if job.cancel.is_set():
                cancelled = self.backend.cancel(job.remote_id)
                return {"status": "CANCELLED", "error": "cancelled in the page" + (
                    "" if cancelled else f"; {self.backend.where} cannot cancel, the worker finishes the job")}
            state = self.backend.status(job.remote_id)
            status = state.get("status", "")
            if status in jobclient.FINAL_STATES:
                return state
            out = state.get("output")
            if status == "IN_PROGRESS" and isinstance(out, dict):
                prog = jobclient.parse_progress(out)
                event: dict[str, object] = {"node": str(out["node_id"]) if out.get("node_id") is not None else None}
                if prog and prog.total:
                    event.update(value=prog.completed, max=prog.total)
                if not job.events or job.events[-1] != event:
                    job.events.append(event)
            job.cancel.wait(delay)
            delay = min(self.poll, delay * 1.5)

    def _save(self, job: Job, output: dict) -> list[dict]:
        sub = Path(OUTPUT_SUBFOLDER) / job.id  # the bridge's own uuid: a page's prompt_id may be any path
        saved = jobclient.save_outputs(output, self.output_dir / sub)
        return [{"node_id": str(s["node_id"]), "kind": s["kind"], "filename": Path(s["path"]).name,
                 "subfolder": str(sub)} for s in saved]

    def view(self, job: Job, since: int) -> dict:
        return {"id": job.id, "status": job.status, "events": job.events[since:], "outputs": job.outputs,
                "error": job.error, "node_id": job.node_id}

    # --- HTTP ---------------------------------------------------------------------------------------
    def _handler(self):
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if secrets.compare_digest(self.headers.get("Authorization", "").encode("utf-8", "replace"),
                                          f"Bearer {bridge.token}".encode()):
                    return True
                self._reply(401, {"error": "token required"})
                return False

            def do_POST(self):
                if not self._authorized():
                    return
                parts = urlsplit(self.path).path.strip("/").split("/")
                if parts == ["jobs"]:
                    n = int(self.headers.get("Content-Length") or 0)
                    try:
                        body = json.loads(self.rfile.read(n)) if 0 < n <= 64 << 20 else None
                    except ValueError:
                        body = None
                    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
                        return self._reply(400, {"error": "expected {prompt, prompt_id}"})
                    return self._reply(200, bridge.view(bridge.start(body["prompt"], body.get("prompt_id", "")), 0))
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "cancel" and parts[1] in bridge.jobs:
                    bridge.jobs[parts[1]].cancel.set()
                    return self._reply(200, {"ok": True})
                self._reply(404, {"error": "not found"})

            def do_GET(self):
                if not self._authorized():
                    return
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "jobs" and parts[1] in bridge.jobs:
                    since = parse_qs(url.query).get("since", ["0"])[0]
                    return self._reply(200, bridge.view(bridge.jobs[parts[1]], int(since) if since.isdigit() else 0))
                self._reply(404, {"error": "not found"})

        return Handler
