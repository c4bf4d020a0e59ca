"""Submit a workflow to a RunPod endpoint (or a local handler), follow it, fetch its outputs.

Two backends speak the same small protocol (submit, status, cancel):
- `RunPodBackend`: a RunPod serverless endpoint through the runpod SDK
  (`Endpoint.run`, GET `/status/{id}`, POST `/cancel/{id}`); the base URL is the
  SDK's ($RUNPOD_ENDPOINT_BASE_URL, default https://api.runpod.ai/v2). While a
  job runs, its status carries the handler's last `progress_update` as `output`.
- `LocalBackend`: the runpod SDK's local API (`python -m handler --rp_serve_api`):
  POST /run, then POST /status/{id}, which runs the job and answers when it is
  done. It has no progress and no cancel: a cancelled local job stops being
  waited for, the local worker finishes it.

The handler answers `{"outputs": [{node_id, kind, filename, url | signed_url | data}], ...}`
or `{"error": {...}}`; every output is saved into the output folder (base64
`data`, http(s) URLs, gs:// and s3:// objects) through a `.part` file and a rename.
The result is the worker's text, untrusted: each output gets its own name (at most
MAX_NAME bytes), URLs are fetched from public hosts only (every redirect hop and
connection checked, COMFYVER_TRUSTED_HOSTS excepted), buckets are read with this
machine's keys only where configured for delivery (BUCKET_NAME, GCS_BUCKET), and a
worker's error is shown with credentials masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from comfyver.base import project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_bytes
from comfyver.sources import download

FINAL_STATES = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
EXIT_CODES = {"COMPLETED": 0, "FAILED": 1, "TIMED_OUT": 124, "CANCELLED": 130}
SET_RE = re.compile(r"^(?P<node>[^.=\s]+)\.(?P<field>inputs\.[^=\s]+)=(?P<value>.*)$", re.S)


# ---------------------------------------------------------------- job input
def parse_set(expr: str) -> dict:
    """`NODE.inputs.FIELD=VALUE` -> the handler's override; VALUE is JSON if it parses, else a string."""
    m = SET_RE.match(expr)
    if not m:
        raise UsageError(f"--set {expr!r} is not NODE.inputs.FIELD=VALUE",
                         hint="for example: --set 6.inputs.text='a red fox' --set 3.inputs.seed=42")
    raw = m["value"]
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return {"node_id": m["node"], "field": m["field"], "value": value}


def read_workflow(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"workflow {path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"workflow {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"workflow {path}: expected a JSON object (API or UI format)")
    return data


def read_image(path: Path) -> dict:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--image {path}: cannot read ({exc.strerror})") from None
    return {"name": Path(path).name, "image": base64.b64encode(data).decode()}


def build_input(workflow: Path, images: Sequence[Path] = (), sets: Sequence[str] = (), output_mode: str | None = None,
                version_id: str | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {"workflow": read_workflow(workflow)}
    if version_id:
        job["version_id"] = version_id  # the worker refuses a job meant for another version
    if images:
        job["images"] = [read_image(p) for p in images]
    if sets:
        job["overrides"] = [parse_set(s) for s in sets]
    if output_mode:
        job["output_mode"] = output_mode
    return job


# ---------------------------------------------------------------- progress
@dataclass
class Progress:
    completed: float | None = None
    total: float | None = None
    text: str = ""


def parse_progress(obj) -> Progress | None:
    """The handler's progress update ({step, max, percent, node_id}) or another plain shape: {value, max},
    {step, total}, {percent}, a number (percent) or text."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return Progress(text=obj)
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return Progress(float(obj), 100.0)
    if not isinstance(obj, dict):
        return None
    node = obj.get("node_id") or obj.get("node")
    text = str(obj.get("message") or (f"node {node}" if node else "") or obj.get("status") or "")
    for done_key, total_key in (("step", "max"), ("value", "max"), ("step", "total"), ("completed", "total")):
        done, total = obj.get(done_key), obj.get(total_key)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return Progress(float(done), float(total), text)
    pct = obj.get("percent", obj.get("progress"))
    if isinstance(pct, (int, float)) and not isinstance(pct, bool):
        return Progress(float(pct) * (100 if pct <= 1 else 1), 100.0, text)
    return Progress(text=text) if text else None


# ---------------------------------------------------------------- backends
def _sdk_error(exc: Exception, what: str) -> ComfyverError:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = {404: "check the endpoint id", 429: "RunPod is rate-limiting: retry in a minute"}.get(code)
        return ComfyverError(f"{what}: RunPod answered HTTP {code}", hint=hint)
    if isinstance(exc, RuntimeError) and "401" in str(exc):
        return ComfyverError(f"{what}: RunPod refused the API key (HTTP 401)", hint="set RUNPOD_API_KEY to a valid key")
    return ComfyverError(f"{what}: {type(exc).__name__}: {web.redact(str(exc))}", hint="check your network")


class RunPodBackend:
    def __init__(self, endpoint_id: str, api_key: str | None = None):
        import runpod

        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", endpoint_id or ""):
            raise UsageError(f"--endpoint {endpoint_id!r} is not a RunPod endpoint id")
        key = api_key or os.environ.get("RUNPOD_API_KEY")
        if not key:
            raise UsageError("RUNPOD_API_KEY is not set", hint="export RUNPOD_API_KEY=... (RunPod: Settings > API Keys)")
        self.endpoint_id = endpoint_id
        self.endpoint = runpod.Endpoint(endpoint_id, api_key=key)
        self.endpoint.rp_client.endpoint_url_base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL", runpod.endpoint_url_base)
        self.jobs: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return f"endpoint {self.endpoint_id}"

    def submit(self, job_input: dict) -> str:
        try:
            job = self.endpoint.run({"input": job_input})
        except Exception as exc:
            raise _sdk_error(exc, f"submit to {self.where}") from None
        self.jobs[job.job_id] = job
        return job.job_id

    def status(self, job_id: str) -> dict:
        try:
            return self.endpoint.rp_client.get(f"{self.endpoint_id}/status/{job_id}")
        except Exception as exc:
            raise _sdk_error(exc, f"status of job {job_id} on {self.where}") from None

    def cancel(self, job_id: str) -> bool:
        try:
            self.jobs[job_id].cancel(timeout=10)
            return True
        except Exception:
            return False


class LocalBackend:
    def __init__(self, url: str):
        web.check_scheme(url, ("http", "https"), "--local")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self._results: dict[str, dict] = {}
        self._threads: dict[str, threading.Thread] = {}

    @property
    def where(self) -> str:
        return f"local worker {self.url}"

    def _post(self, path: str, body: dict | None, timeout: float | None) -> dict:
        try:
            r = self.session.post(f"{self.url}{path}", json=body, timeout=timeout)
        except requests.RequestException as exc:
            raise ComfyverError(f"{self.where}: {type(exc).__name__} on {path}",
                                hint="start it with: python -m handler --rp_serve_api (default port 8000)") from None
        if r.status_code >= 400:
            raise ComfyverError(f"{self.where}: HTTP {r.status_code} on {path}: {web.redact(r.text[:300])}",
                                hint="the worker's own log says why (the SDK's local API answers 500 when a "
                                     "handler's result does not fit its schema)")
        try:
            return r.json()
        except ValueError:
            raise ComfyverError(f"{self.where}: {path} did not return JSON") from None

    def submit(self, job_input: dict) -> str:
        job_id = self._post("/run", {"input": job_input}, 30).get("id")
        if not job_id:
            raise ComfyverError(f"{self.where}: /run returned no job id")

        def wait():
            try:
                self._results[job_id] = self._post(f"/status/{job_id}", None, None)
            except ComfyverError as exc:
                self._results[job_id] = {"id": job_id, "status": "FAILED", "error": exc.message}

        t = threading.Thread(target=wait, daemon=True)
        self._threads[job_id] = t
        t.start()
        return job_id

    def status(self, job_id: str) -> dict:
        return self._results.get(job_id) or {"id": job_id, "status": "IN_PROGRESS"}

    def cancel(self, job_id: str) -> bool:
        return False  # the SDK's local API has no cancel route


# ---------------------------------------------------------------- outputs
# A job's result is the worker's text: its names, URLs and buckets are untrusted like a downloaded workflow's.
MAX_NAME = 200  # bytes in a saved output's name: file systems allow 255, leaving room for `.part` and temp names
# the bucket a result may name for a download with this machine's keys: the one configured for delivery, in the
# variables the handler reads (handler/settings.py)
BUCKET_ENV = {"s3": "BUCKET_NAME", "gs": "GCS_BUCKET"}


def _safe_name(name, fallback: str) -> str:
    base = PurePosixPath(str(name or "").replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")
    return base or fallback


def _fit(name: str) -> str:
    """`name` (ASCII, from _safe_name) cut to MAX_NAME, its extension kept."""
    if len(name) <= MAX_NAME:
        return name
    stem, ext = os.path.splitext(name)
    ext = ext if len(ext) <= 16 else ""
    return stem[:MAX_NAME - len(ext)].rstrip(" .") + ext


def _unique_name(name: str, prefix: str, used: set[str]) -> str:
    """`name` fitted to MAX_NAME and unique among the outputs saved so far, ignoring case (a case-folding disk
    holds one of A.png and a.png), its `.part` download file included; else `<prefix>-<n>-<name>`."""
    candidate, n = _fit(name), 1
    while {candidate.casefold(), f"{candidate}.part".casefold()} & used:
        candidate, n = _fit(f"{prefix}{'' if n == 1 else f'-{n}'}-{name}"), n + 1
    used.update({candidate.casefold(), f"{candidate}.part".casefold()})
    return candidate


def _check_bucket(url: str, what: str) -> None:
    """A result's s3:// or gs:// URL is read with this machine's keys: only from the bucket configured for delivery."""
    p = urlsplit(url)
    env = BUCKET_ENV[p.scheme]
    configured = os.environ.get(env) or ""
    if not p.netloc or p.netloc != configured:
        raise ComfyverError(f"{what}: the result names {p.scheme}://{p.netloc}, not the bucket configured for "
                            f"outputs ({env}={configured or 'unset'}); not read with your keys",
                            hint=f"if your worker delivers there, set {env}={p.netloc} and run again; or have the "
                                 "worker return signed URLs or base64 (output_mode base64)")


def _fetch_public(url: str, dest: Path, what: str) -> None:
    """An http(s) output from a public host only: the URL, each redirect hop and each connection are checked
    (web.untrusted_fetches, the rule for sources a workflow names)."""
    try:
        with web.untrusted_fetches():
            web.check_untrusted_source(url, ("http", "https"))  # save_output sends only http(s) here
            download.download(url, dest, what=what)
    except (ValueError, web.NonPublicAddress):
        raise ComfyverError(f"{what}: {web.redact(url)} is on, or redirects to, a local, private or metadata address; "
                            "not fetched", hint="a job result may point only at public http(s) hosts; to fetch from "
                            "your own storage on this network, list its host:port in COMFYVER_TRUSTED_HOSTS") from None


def _fetch_s3(url: str, dest: Path) -> None:
    import boto3

    p = urlsplit(url)
    client = boto3.client("s3", endpoint_url=os.environ.get("BUCKET_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL"),
                          aws_access_key_id=os.environ.get("BUCKET_ACCESS_KEY_ID") or None,
                          aws_secret_access_key=os.environ.get("BUCKET_SECRET_ACCESS_KEY") or None)
    part = dest.with_name(dest.name + ".part")
    try:
        client.download_file(p.netloc, unquote(p.path.lstrip("/")), str(part))
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise ComfyverError(f"output {url}: S3 download failed: {web.redact(str(exc))}",
                            hint="set BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY") from None
    os.replace(part, dest)


def save_output(entry: dict, dest: Path) -> None:
    """Write one output entry to `dest`: base64 `data`, else a signed/public http(s) URL on a public host, else
    gs:// / s3:// in the bucket configured for delivery."""
    what = f"output {entry.get('filename')!r} of node {entry.get('node_id')}"
    if entry.get("data") is not None:
        try:
            data = base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ComfyverError(f"{what}: `data` is not valid base64") from None
        atomic_write_bytes(dest, data)
        return
    url = entry.get("signed_url") or entry.get("public_url") or entry.get("url")
    if not isinstance(url, str) or not url:
        raise ComfyverError(f"{what}: has neither data nor a URL", hint="check the handler's output_mode")
    web.check_scheme(url, ("https", "http", "gs", "s3"), what)
    # a `.part` here is another job's (names like ComfyUI_00001_.png repeat): never resumed into this output
    dest.with_name(dest.name + ".part").unlink(missing_ok=True)
    scheme = urlsplit(url).scheme
    if scheme in BUCKET_ENV:
        _check_bucket(url, what)
    if scheme == "s3":
        _fetch_s3(url, dest)
    elif scheme == "gs":
        download.download(url, dest, what=what)
    else:
        _fetch_public(url, dest, what)


def save_outputs(output: object, out_dir: Path) -> list[dict[str, Any]]:
    """Save every output of a finished job into `out_dir`, each under its own name (no output replaces
    another); returns [{node_id, kind, path, bytes}], one per output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = output.get("outputs") if isinstance(output, dict) else None
    saved: list[dict[str, Any]] = []
    used: set[str] = set()
    for i, entry in enumerate(entries or []):
        if not isinstance(entry, dict):
            continue
        node = _safe_name(entry.get("node_id"), "node")[:40]
        if entry.get("filename") is None and isinstance(entry.get("text"), str):
            name, payload = f"{node}-text-{i}.txt", {"data": base64.b64encode(entry["text"].encode()).decode()}
        else:
            name, payload = _safe_name(entry.get("filename"), f"{node}-output-{i}"), entry
        dest = out_dir / _unique_name(name, f"{node}-{i}", used)
        save_output({**payload, "node_id": entry.get("node_id"), "filename": entry.get("filename")}, dest)
        saved.append({"node_id": entry.get("node_id"), "kind": entry.get("kind", "file"), "path": str(dest),
                      "bytes": dest.stat().st_size})
    return saved


# ---------------------------------------------------------------- the loop
def _structured(error):
    """A handler error sent as JSON text (RunPod carries `error` as a string) back as an object."""
    if isinstance(error, str) and error.lstrip().startswith("{"):
        try:
            return json.loads(error)
        except ValueError:
            pass
    return error


def describe_error(error) -> str:
    if isinstance(error, dict):
        where = f" (node {error['node_id']})" if error.get("node_id") else ""
        text = f"{error.get('message') or json.dumps(error)}{where}"
        return text + (f"\n  hint: {error['hint']}" if error.get("hint") else "")
    return str(error)


@dataclass
class JobResult:
    job_id: str
    status: str
    files: list[dict] = field(default_factory=list)
    error: object = None
    elapsed: float = 0.0
    output: object = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def as_json(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, "elapsed": round(self.elapsed, 2),
                "outputs": self.files, **({"error": self.error} if self.error else {})}


def follow(backend, job_id: str, *, timeout: float | None = None, poll: float = 1.0,
           on_progress: Callable[[Progress], None] | None = None) -> dict:
    """Poll until the job is final; report progress; cancel on Ctrl-C or when `timeout` passes."""
    start = time.monotonic()
    try:
        while True:
            state = backend.status(job_id)
            status = state.get("status", "")
            if status in FINAL_STATES:
                return state
            if on_progress and status == "IN_PROGRESS":
                prog = parse_progress(state.get("output"))
                if prog:
                    on_progress(prog)
            if timeout and time.monotonic() - start > timeout:
                backend.cancel(job_id)
                return {"id": job_id, "status": "TIMED_OUT", "error": f"no result within {timeout:g} s (job cancelled)"}
            time.sleep(poll)
    except KeyboardInterrupt:
        return _interrupted(backend, job_id)


def _interrupted(backend, job_id: str) -> dict:
    """Ctrl-C once the job exists: cancel it where the backend can."""
    cancelled = backend.cancel(job_id)
    note = "job cancelled" if cancelled else "stopped waiting; this backend cannot cancel, the worker finishes the job"
    return {"id": job_id, "status": "CANCELLED", "error": f"interrupted: {note}"}


def _masked(value):
    """`value` (a worker's error: text, or JSON objects and lists of it) with every credential masked (web.redact)."""
    if isinstance(value, str):
        return web.redact(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def outcome(state: dict) -> tuple[str, object, object]:
    """(status, output, error) of a final job state: the handler's error as an object, credentials masked (a
    worker may echo one), and a COMPLETED job whose output carries an error counted as FAILED."""
    status, output = state.get("status") or "FAILED", state.get("output")
    error = _masked(_structured(state.get("error") or (output.get("error") if isinstance(output, dict) else None)))
    return ("FAILED" if status == "COMPLETED" and error else status), output, error


def run_job(backend, job_input: dict, out_dir: Path, *, timeout: float | None = None, poll: float = 1.0,
            on_submit: Callable[[str], None] | None = None,
            on_progress: Callable[[Progress], None] | None = None) -> JobResult:
    start = time.monotonic()
    job_id = backend.submit(job_input)
    try:
        if on_submit:
            on_submit(job_id)
        state = follow(backend, job_id, timeout=timeout, poll=poll, on_progress=on_progress)
    except KeyboardInterrupt:  # between submitting and following: the job exists, so cancel it too
        state = _interrupted(backend, job_id)
    status, output, error = outcome(state)
    result = JobResult(job_id, status, error=error, output=output)
    if result.status == "COMPLETED":
        result.files = save_outputs(output or {}, out_dir)
    result.elapsed = time.monotonic() - start
    return result


def workflow_path(name: str, version: str | None) -> Path:
    """A workflow file given as a path, or by name inside versions/<version>/workflows/ (never outside it)."""
    path = Path(name)
    if path.is_file() or not version:
        return path
    vdir = project.version_dir(project.find_root(), version) / "workflows"
    candidate = (vdir / name).resolve()
    if vdir.resolve() not in candidate.parents:
        raise UsageError(f"workflow {name!r} is outside versions/{version}/workflows")
    return candidate if candidate.suffix else candidate.with_suffix(".json")
