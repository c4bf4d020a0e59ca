"""A version's tests: `versions/<id>/tests/*.json`, jobs with what they must produce (docs/ship.md).

    {"input": {"workflow": "invert", "overrides": [...], ...},     # the job input; workflow: an object, or a
                                                                    # name in versions/<id>/workflows/
     "expect": {"status": "success",                               # or "error" (+ "error_contains")
                "outputs": [{"node_id": "3", "kind": "image", "count": 1,
                             "min_bytes": 1, "max_bytes": 100000, "sha256": "..."}]},
     "timeout": 600, "description": "..."}

Each test runs as one job through the job client (jobclient.run_job) on any backend: a RunPod endpoint, the
SDK's local API, or a worker started here on a realized tree (`LocalWorker`). Every job carries the
version's `version_id` and `lock_digest`, so a worker running another lock refuses it (and the test fails).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.realize import comfystate
from comfyver.ship import jobclient

DEFAULT_TIMEOUT = 600.0
SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["input", "expect"], "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "input": {
            "type": "object", "required": ["workflow"],
            "properties": {"workflow": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "object"}]}},
        },
        "expect": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {
                "status": {"enum": ["success", "error"]},
                "error_contains": {"type": "string", "minLength": 1},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["node_id"], "additionalProperties": False,
                    "properties": {"node_id": {"type": "string", "minLength": 1},
                                   "kind": {"type": "string", "minLength": 1},
                                   "count": {"type": "integer", "minimum": 1},
                                   "min_bytes": {"type": "integer", "minimum": 0},
                                   "max_bytes": {"type": "integer", "minimum": 0},
                                   "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}},
            },
        },
    },
}


@dataclass
class ExpectedOutput:
    node_id: str
    kind: str | None = None
    count: int | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    sha256: str | None = None

    def label(self) -> str:
        return f"node {self.node_id}" + (f" {self.kind}" if self.kind else "")


@dataclass
class Expectation:
    status: str  # "success" | "error"
    outputs: list[ExpectedOutput] = field(default_factory=list)
    error_contains: str | None = None


@dataclass
class VersionTest:
    name: str
    path: Path
    job_input: dict[str, Any]
    expect: Expectation
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class TestResult:
    name: str
    file: str
    passed: bool
    reasons: list[str]
    job_id: str | None = None
    status: str | None = None
    elapsed: float = 0.0
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "passed": self.passed, "reasons": self.reasons,
                "job_id": self.job_id, "status": self.status, "elapsed": round(self.elapsed, 2),
                "outputs": self.outputs}


@dataclass
class TestRun:
    version_id: str
    target: str
    results: list[TestResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version_id, "target": self.target, "passed": self.passed,
                "counts": {"passed": sum(r.passed for r in self.results),
                           "failed": sum(not r.passed for r in self.results)},
                "results": [r.as_json() for r in self.results]}


# ---------------------------------------------------------------- reading
def _bad(path: Path, message: str) -> ComfyverError:
    return ComfyverError(f"test {path}: {message}",
                         hint="a test is {\"input\": {job input}, \"expect\": {\"status\", \"outputs\"}}; "
                              "docs/ship.md (Tests before promotion) has the format")


def _workflow(vdir: Path, path: Path, name: str) -> dict[str, Any]:
    wdir = (vdir / "workflows").resolve()
    candidate = (wdir / name).resolve()
    if wdir not in candidate.parents:
        raise _bad(path, f"input.workflow {name!r} is outside versions/{vdir.name}/workflows")
    if not candidate.suffix:
        candidate = candidate.with_suffix(".json")
    if not candidate.is_file():
        raise _bad(path, f"input.workflow {name!r}: no {candidate.relative_to(wdir.parent)}")
    try:
        return jobclient.read_workflow(candidate)
    except UsageError as exc:
        raise _bad(path, f"input.workflow {name!r}: {exc.message}") from None


def load_test(path: Path, vdir: Path, version_id: str, lock_digest: str) -> VersionTest:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})") from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise _bad(path, f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}")
    job = dict(data["input"])
    for key in ("version_id", "lock_digest"):
        if key in job:
            raise _bad(path, f"input.{key}: set by comfyver test (the version's own); leave it out")
    if isinstance(job["workflow"], str):
        job["workflow"] = _workflow(vdir, path, job["workflow"])
    job.update({"version_id": version_id, "lock_digest": lock_digest})
    exp = data["expect"]
    outputs = [ExpectedOutput(**o) for o in exp.get("outputs", [])]
    for o in outputs:
        if o.min_bytes is not None and o.max_bytes is not None and o.min_bytes > o.max_bytes:
            raise _bad(path, f"expect.outputs {o.label()}: min_bytes {o.min_bytes} > max_bytes {o.max_bytes}")
    if exp["status"] == "error" and outputs:
        raise _bad(path, "expect.outputs: a test expecting an error produces no outputs")
    return VersionTest(name=path.stem, path=path, job_input=job,
                       expect=Expectation(status=exp["status"], outputs=outputs,
                                          error_contains=exp.get("error_contains")),
                       timeout=float(data.get("timeout", DEFAULT_TIMEOUT)))


def load_tests(root: Path, version_id: str, only: list[str] | None = None) -> list[VersionTest]:
    """Every test of the version (sorted by file name), or the named ones; a bad file is an error naming it."""
    vdir = project.version_dir(root, version_id)
    lock = lockfile.read(project.lock_path(root, version_id))
    digest = lockfile.lock_digest(lock)
    tdir = vdir / "tests"
    files = sorted(tdir.glob("*.json")) if tdir.is_dir() else []
    if only:
        by_name = {f.stem: f for f in files}
        missing = [n for n in only if n.removesuffix(".json") not in by_name]
        if missing:
            raise UsageError(f"version {version_id} has no test {', '.join(missing)}",
                             hint=f"its tests: {', '.join(by_name) or 'none'}")
        files = [by_name[n.removesuffix(".json")] for n in only]
    if not files:
        raise ComfyverError(f"version {version_id} has no tests (versions/{version_id}/tests/*.json)",
                            hint="write one: a job input and what it must produce (docs/ship.md)")
    return [load_test(f, vdir, version_id, digest) for f in files]


# ---------------------------------------------------------------- a first test from a workflow
# core nodes that save a file, and the kind the worker reports it as (handler/outputs.py)
SAVE_KINDS = {"SaveImage": "image", "SaveAnimatedWEBP": "video", "SaveAnimatedPNG": "video", "SaveVideo": "video",
              "SaveWEBM": "video", "SaveAudio": "audio", "SaveAudioMP3": "audio", "SaveAudioOpus": "audio",
              "SaveGLB": "3d"}
UI_SKIPPED = (2, 4)  # a UI node's mode: 2 muted, 4 bypassed (the worker runs every other mode)


class NoFirstTest(ComfyverError):
    """The workflow cannot get a first test (the message says why and what to do)."""


def first_test(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    """A first test of the version's workflow `name` (versions/<id>/workflows/<name>): it must succeed and each
    active core save node at its top level must write at least one file of its kind. Other outputs (a pack's
    own save or preview node) cannot be known before a run: the description says to add them."""
    saves: list[tuple[str, str]] = []
    if isinstance(workflow.get("nodes"), list):  # UI format: the API prompt's ids are the nodes' ids
        definitions = workflow.get("definitions")
        if isinstance(definitions, dict) and definitions.get("subgraphs"):
            raise NoFirstTest(f"workflows/{name}: a UI-format workflow with subgraphs, which the worker refuses; "
                              "no test written", hint="export it in API format (Workflow > Export (API)), lock that "
                                                      "file, and write its test")
        for n in workflow["nodes"]:
            if isinstance(n, dict) and n.get("type") in SAVE_KINDS and n.get("mode") not in UI_SKIPPED:
                saves.append((str(n.get("id")), SAVE_KINDS[n["type"]]))
    else:
        for nid, n in workflow.items():
            if isinstance(n, dict) and n.get("class_type") in SAVE_KINDS:
                saves.append((str(nid), SAVE_KINDS[n["class_type"]]))
    saves.sort(key=lambda s: (len(s[0]), s[0]))
    outputs = [{"node_id": nid, "kind": kind, "min_bytes": 1} for nid, kind in saves]
    return {"description": f"written by comfyver lock from workflows/{name}: the job succeeds"
                           + (" and each core save node writes a file" if outputs else "")
                           + "; add counts, sizes, a sha256 for a deterministic CPU job, and the outputs of "
                             "other nodes (docs/ship.md)",
            "input": {"workflow": name},
            "expect": {"status": "success", "outputs": outputs},
            "timeout": DEFAULT_TIMEOUT}


def write_first_tests(root: Path, version_id: str, workflows: list[str]) -> tuple[list[str], list[str], list[str]]:
    """For each of the version's `workflows` (`workflows/<name>.json`), versions/<id>/tests/<stem>.json unless a test
    of that name exists: (written, kept) as paths under versions/<id>/, and why others got none."""
    from comfyver.base.fsutil import atomic_write_text

    vdir = project.version_dir(root, version_id)
    written, kept, skipped = [], [], []
    for rel in workflows:
        name = Path(rel).name
        target = vdir / "tests" / f"{Path(name).stem}.json"
        if target.exists():
            kept.append(str(target.relative_to(vdir)))
            continue
        try:
            test = first_test(jobclient.read_workflow(vdir / rel), name)
        except NoFirstTest as exc:
            skipped.append(f"{exc.message}; {exc.hint}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")  # checked as `comfyver test` reads it before it is named
        atomic_write_text(part, json.dumps(test, indent=2) + "\n")
        try:
            load_test(part, vdir, version_id, "0" * 64)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        written.append(str(target.relative_to(vdir)))
    return written, kept, skipped


# ---------------------------------------------------------------- checking
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check(test: VersionTest, result: jobclient.JobResult) -> list[str]:
    """Why `result` does not meet the test's expectations (empty: it does)."""
    exp = test.expect
    error = jobclient.describe_error(result.error) if result.error else ""
    if exp.status == "error":
        if result.status == "COMPLETED":
            return ["expected the job to fail, it completed"]
        if exp.error_contains and exp.error_contains not in error:
            return [f"expected an error containing {exp.error_contains!r}, got: {error or result.status}"]
        return []
    if result.status != "COMPLETED":
        return [f"job {result.status}" + (f": {error}" if error else "")]
    reasons = []
    for want in exp.outputs:
        got = [f for f in result.files if str(f.get("node_id")) == want.node_id
               and (want.kind is None or f.get("kind") == want.kind)]
        if not got:
            produced = ", ".join(f"{f.get('node_id')}:{f.get('kind')}" for f in result.files) or "nothing"
            reasons.append(f"{want.label()}: no output (the job produced {produced})")
            continue
        if want.count is not None and len(got) != want.count:
            reasons.append(f"{want.label()}: {len(got)} outputs, expected {want.count}")
        for f in got:
            name, size = Path(f["path"]).name, int(f.get("bytes") or 0)
            if want.min_bytes is not None and size < want.min_bytes:
                reasons.append(f"{want.label()}: {name} is {size} bytes, fewer than min_bytes {want.min_bytes}")
            if want.max_bytes is not None and size > want.max_bytes:
                reasons.append(f"{want.label()}: {name} is {size} bytes, more than max_bytes {want.max_bytes}")
            if want.sha256 is not None and (digest := _sha256(f["path"])) != want.sha256:
                reasons.append(f"{want.label()}: {name} has sha256 {digest[:16]}..., expected {want.sha256[:16]}...")
    return reasons


def run_tests(backend: Any, tests: list[VersionTest], version_id: str, out_dir: Path, *, poll: float = 1.0,
              on_result: Callable[[TestResult], None] | None = None) -> TestRun:
    """Run each test as a job on `backend` (jobclient's RunPodBackend or LocalBackend), one after another."""
    results = []
    for test in tests:
        try:
            job = jobclient.run_job(backend, test.job_input, out_dir / test.name, timeout=test.timeout, poll=poll)
        except ComfyverError as exc:
            res = TestResult(test.name, str(test.path), False, [f"could not run the job: {exc.message}"])
        else:
            reasons = check(test, job)
            outputs = [{"node_id": f.get("node_id"), "kind": f.get("kind"), "path": f["path"], "bytes": f.get("bytes"),
                        "sha256": _sha256(f["path"])} for f in job.files]
            res = TestResult(test.name, str(test.path), not reasons, reasons, job.job_id, job.status, job.elapsed,
                             outputs)
        results.append(res)
        if on_result:
            on_result(res)
    return TestRun(version_id=version_id, target=getattr(backend, "where", str(backend)), results=results)


# ---------------------------------------------------------------- a worker on a realized tree
@contextmanager
def local_worker(tree: Path, version_id: str, lock_digest: str, log: Path, *,
                 start_timeout: float = 300) -> Iterator[str]:
    """The handler (`python -m handler --rp_serve_api`, the runpod SDK's local API) on a realized tree, on
    127.0.0.1; yields its URL for jobclient.LocalBackend. Its ComfyUI's state goes to a folder beside `log`."""
    import socket

    import requests

    if not (tree / "main.py").is_file():
        raise UsageError(f"--dir {tree}: not a realized ComfyUI tree (no main.py)",
                         hint=f"comfyver realize {version_id} --into {tree}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        comfy_port = s.getsockname()[1]
    python = tree / ".venv" / "bin" / "python"
    env = {**os.environ, "COMFY_HOME": str(tree), "COMFY_PORT": str(comfy_port), "OUTPUT_MODE": "base64",
           "COMFYVER_VERSION_ID": version_id, "COMFYVER_LOCK_DIGEST": lock_digest,
           comfystate.STATE_DIR_ENV: str(log.parent / "comfyui-state")}
    if python.is_file():
        env["COMFY_PYTHON"] = str(python)
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "handler", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                                 "--rp_api_port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    raise ComfyverError(f"the worker on {tree} exited (code {proc.returncode}): "
                                        f"{web.redact(log.read_text(errors='replace')[-800:])}", hint=f"its log: {log}")
                try:
                    requests.get(url + "/docs", timeout=1)
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise ComfyverError(f"the worker on {tree} did not start in {start_timeout:g} s",
                                            hint=f"its log: {log}") from None
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()  # the worker stops its ComfyUI on SIGTERM
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
