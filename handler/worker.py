"""One worker: owns ComfyUI (or attaches to one at COMFY_URL) and runs RunPod jobs against it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import copy
import dataclasses
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from comfyver.base import lockfile, project
from comfyver.base.errors import ComfyverError

from handler import jobmodels
from handler import outputs as out_mod
from handler.comfy_client import WS_CLOSED, ComfyClient, ComfyUnreachable, PromptRejected
from handler.comfy_process import DIGEST, ComfyProcess, realized_digest
from handler.errors import JobError, bad_input, redact
from handler.fetch import decode_image, fetch_url, safe_name
from handler.settings import Settings
from handler.storage import MODES, GCSStore, S3Store, base64_entries, clean_prefix, object_key
from handler.workflow import (
    apply_overrides,
    is_ui_format,
    parse_workflow,
    ui_to_api,
    upload_inputs,
    validate,
    validation_error,
)

log = logging.getLogger("handler")
JOB_INPUTS = "comfyver-jobs"  # input/<JOB_INPUTS>/<job>/: each job's images, beside (never over) shipped files
INPUT_FIELDS = {"workflow", "workflow_url", "images", "overrides", "version_id", "lock_digest", "output_mode",
                "gcs_bucket", "gcs_prefix", "timeout", "verbose", "comfy_org_api_key", "models"}
PROGRESS_INTERVAL = 0.5


class Worker:
    def __init__(self, settings: Settings | None = None, process: ComfyProcess | None = None):
        self.settings = s = settings or Settings()
        if s.comfy_url:
            url = s.comfy_url
        else:
            if process is None:
                process = ComfyProcess(s)
            url = process.url
        self.process = process
        self.client = ComfyClient(url)
        self.active_version = s.version_id
        self._restart: concurrent.futures.Future | None = None
        self._stores: dict = {}
        self._lock = threading.Lock()
        self._closed = False
        # output files of the last delivered job: ComfyUI's cache may answer the same prompt with these names
        # again, so they are deleted only once a later job has been delivered (W1)
        self._kept: list[Path] = []

    def close(self) -> None:
        """Stop the ComfyUI this worker started (and its watcher) for good: once this returns, no restart or
        version switch starts one again (the worker process exits next, taking its threads along)."""
        with self._lock:
            self._closed = True
            process = self.process
        if process is not None:
            process.close()

    # --- start-up and health ------------------------------------------------------------------
    def start(self) -> None:
        """Start ComfyUI (unless already started) and wait until /system_stats answers."""
        s = self.settings
        if self.process is not None:
            if self.process.proc is None:
                self.process.start()
            if not self.process.wait_ready():
                raise RuntimeError(f"ComfyUI did not become ready ({self.process.exit_note()}); last log lines:\n"
                                   + "\n".join(self.process.tail(s.log_tail_lines)))
        else:
            deadline = time.monotonic() + s.comfy_start_timeout
            while not asyncio.run(self._healthy_once()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ComfyUI at COMFY_URL={s.comfy_url} did not answer /system_stats")
                time.sleep(0.1)
        if self.process is not None:
            threading.Thread(target=self._watch, name="comfyui-watch", daemon=True).start()
        if s.gcs_validate and s.output_mode == "gcs":
            try:
                GCSStore(s, s.gcs_bucket or "").check()  # none: GCSStore says a bucket is needed
            except JobError as exc:
                raise RuntimeError(f"GCS_VALIDATE: bucket {s.gcs_bucket!r} is not usable: {exc.message}"
                                   + (f" ({exc.hint})" if exc.hint else "")) from None
            except Exception as exc:  # noqa: BLE001 - e.g. the probe could be written but not deleted
                raise RuntimeError(f"GCS_VALIDATE: bucket {s.gcs_bucket!r} is not usable: "
                                   f"{type(exc).__name__}: {redact(exc)}") from None

    def _watch(self) -> None:
        """Restart ComfyUI as soon as it exits, even between jobs (not again after a failed restart: the next
        job then reports the failure and asks RunPod for a fresh worker)."""
        while not self._closed:
            time.sleep(1)
            p, r = self.process, self._restart
            if self._closed:
                return
            if p is None or p.proc is None or p.proc.poll() is None:
                continue
            if r is None or (r.done() and r.exception() is None and r.result()):
                p.log.append(f"[handler] {p.exit_note()}")
                self._begin_restart()

    async def _healthy_once(self) -> bool:
        try:
            return await self.client.healthy()
        finally:
            await self.client.close()

    def log_tail(self) -> list[str] | None:
        """ComfyUI's last lines: inside a job only those written since it started (no other job's prompt
        text), with the worker's folders shown as <COMFY_HOME> and <STATE>."""
        if self.process is None:
            return None
        lines = self.process.tail(self.settings.log_tail_lines, since=_job_log_mark.get())
        folders = [(str(self.process.home), "<COMFY_HOME>"), (str(self.settings.state_dir), "<STATE>")]
        out = []
        for line in lines:
            for path, name in folders:
                if path and path != ".":
                    line = line.replace(path, name)
            out.append(redact(line))
        return out

    def _begin_restart(self) -> None:
        with self._lock:
            if self._restart is None or self._restart.done():
                self._restart = concurrent.futures.Future()
                fut = self._restart

                def run():
                    try:
                        fut.set_result(self.process.restart())  # fails once close() has run
                    except Exception as exc:  # noqa: BLE001 - reported through the future
                        fut.set_exception(exc)
                threading.Thread(target=run, daemon=True).start()
        self.client.object_info = None

    async def ensure_healthy(self) -> None:
        """Restart ComfyUI if it died; a JobError asking RunPod for a fresh worker if it cannot be made healthy."""
        if self.process is not None and not self.process.alive():
            self._begin_restart()
        if self._restart is not None:
            try:
                ok = await asyncio.wrap_future(self._restart)
            except Exception as exc:  # noqa: BLE001
                ok, why = False, str(exc)
            else:
                assert self.process is not None  # only a ComfyUI this worker runs is restarted
                why = self.process.exit_note()
            if not ok:
                self._restart = None
                raise JobError("comfyui_down", f"ComfyUI could not be restarted: {redact(why)}",
                               hint="the worker asks RunPod for a replacement; resubmit the job",
                               log_tail=self.log_tail(), refresh_worker=True)
        if self.client.connected() and (self.process is None or self.process.alive()):
            return  # the open websocket already says ComfyUI is serving: no extra round trip per job
        if not await self.client.healthy():
            await asyncio.sleep(1)
            if not await self.client.healthy():
                if self.process is not None:
                    self._begin_restart()
                    return await self.ensure_healthy()
                raise JobError("comfyui_down", f"ComfyUI at {self.client.url} does not answer /system_stats",
                               hint="the worker asks RunPod for a replacement; resubmit the job", refresh_worker=True)

    # --- jobs -----------------------------------------------------------------------------------
    async def handle(self, job: dict) -> dict:
        """The RunPod handler: a result dict, or {"error": "<JSON object>"} (plus refresh_worker when the worker is
        broken). RunPod's `error` field is a string, so the structured error travels JSON-encoded."""
        try:
            return await self.run_job(job)
        except JobError as exc:
            err: dict[str, object] = {"error": json.dumps(exc.to_dict())}
            if exc.refresh_worker:
                err["refresh_worker"] = True
            return err
        except Exception as exc:  # noqa: BLE001 - a structured error instead of a bare traceback
            log.exception("handler: unexpected failure")
            return {"error": json.dumps(JobError("internal", f"the handler failed: {type(exc).__name__}: {exc}",
                                                 hint="this is a bug in the worker; the log tail may say more",
                                                 log_tail=self.log_tail()).to_dict())}

    async def run_job(self, job: dict, out_dir: Path | None = None) -> dict:
        t0 = time.perf_counter()
        if self.process is not None:  # this job's log lines start here (per asyncio task: overlapping jobs too)
            _job_log_mark.set(self.process.log.total)
        s = self.settings
        inp = job.get("input") if isinstance(job, dict) else None
        if not isinstance(inp, dict):
            raise bad_input("input: expected a JSON object with a workflow", 'send {"input": {"workflow": {...}}}')
        unknown = sorted(set(inp) - INPUT_FIELDS)
        if unknown:
            raise bad_input(f"input: unknown field(s) {', '.join(map(repr, unknown))}",
                            f"allowed fields: {', '.join(sorted(INPUT_FIELDS))}")
        verbose = inp.get("verbose", False)
        if not isinstance(verbose, bool):
            raise bad_input("verbose: expected true or false")
        await self._check_version(inp.get("version_id"), inp.get("lock_digest"))
        mode, store, prefix = self._output_target(inp, out_dir)
        timeout = inp.get("timeout", s.job_timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise bad_input(f"timeout: expected a number of seconds >= 0, got {timeout!r}", "0 means no limit")
        if timeout != timeout or timeout == float("inf"):  # NaN, infinity
            raise bad_input(f"timeout: expected a finite number of seconds, got {timeout!r}", "0 means no limit")
        # one deadline for the whole job: input downloads, the run (and its delivery starts before it passes)
        deadline = time.monotonic() + timeout if timeout else None
        models = jobmodels.parse(inp.get("models"), s)  # per-job models: checked before anything is fetched

        if ("workflow" in inp) == ("workflow_url" in inp):
            raise bad_input("input: give exactly one of workflow or workflow_url",
                            "send the API-format workflow as `workflow`, or an http(s) URL as `workflow_url`")
        if "workflow_url" in inp:
            raw = await _stoppable(fetch_url, inp["workflow_url"], "workflow_url", s.allowed_fetch_hosts,
                                   s.max_input_bytes, deadline=deadline)
            wf = parse_workflow(raw.decode("utf-8", "replace"))
        else:
            wf = parse_workflow(inp["workflow"])
        await self.ensure_healthy()
        object_info = await self.client.get_object_info()
        prompt = ui_to_api(wf, object_info) if is_ui_format(wf) else copy.deepcopy(wf)  # the job's own copy
        apply_overrides(prompt, inp.get("overrides"), object_info)
        job_dir = f"{JOB_INPUTS}/{uuid.uuid4().hex}"
        job_models = jobmodels.JobView(s)  # this job's models, shown to ComfyUI until the job ends
        try:
            written = await self._write_images(inp.get("images"), job_dir, deadline)
            if models:
                await _stoppable(jobmodels.provide, job_models, models, s, deadline)
                job_models.point(prompt, object_info)
            _point_at_job_inputs(prompt, {name: f"{job_dir}/{name}" for name in written}, object_info)
            problems = validate(prompt, object_info, s.input_dir)
            if problems:  # models or nodes may have appeared since /object_info was read
                object_info = await self.client.get_object_info(refresh=True)
                problems = validate(prompt, object_info, s.input_dir)
            if problems:
                raise validation_error(problems)
            t_run = time.perf_counter()
            extra = _extra_data(inp)
            pid, ui = await self._execute(prompt, job, _remaining(deadline, timeout), extra)
            t_up = time.perf_counter()
            try:
                result = await self._deliver(ui, mode, store, prefix, job, out_dir)
            except _StaleOutput:
                # ComfyUI answered from its cache with a file that is gone: drop its cache, run once more
                await self.client.request("POST", "/free", json={"free_memory": True})
                pid, ui = await self._execute(prompt, job, _remaining(deadline, timeout), extra)
                t_up = time.perf_counter()
                result = await self._deliver(ui, mode, store, prefix, job, out_dir)
        finally:
            self._drop_job_inputs(job_dir)
            job_models.close()
        t_end = time.perf_counter()
        result.update({"status": "success", "prompt_id": pid,
                       "timings_ms": {"prepare": round((t_run - t0) * 1000, 2), "run": round((t_up - t_run) * 1000, 2),
                                      "deliver": round((t_end - t_up) * 1000, 2), "total": round((t_end - t0) * 1000, 2)}})
        if self.active_version:
            result["version_id"] = self.active_version
        if s.output_format == "worker-comfyui":
            _as_worker_comfyui(result)
        if verbose:
            result["log_tail"] = self.log_tail()
        return result

    async def _check_version(self, vid, digest) -> None:
        """`version_id` and `lock_digest`. With COMFYVER_REALIZE=1 a job naming a version gets the state of it
        mounted at COMFYVER_ROOT: another version, or this one when its mounted lock changed since its tree was
        realized, is realized first (not when the job names the lock of the tree that runs). `lock_digest` must
        then be the lock of the tree that runs."""
        if digest is not None and (not isinstance(digest, str) or not DIGEST.fullmatch(digest)):
            raise bad_input(f"lock_digest: {str(digest)[:80]!r} is not a sha256 hex digest",
                            "send the lockDigest `comfyver export <id> --format report` prints, or omit lock_digest")
        if vid is not None and not lockfile.is_version_id(vid):  # the lock's own rule
            raise bad_input(f"version_id: {vid!r} is not a version id", "use the id of a folder under versions/")
        s = self.settings
        can_realize = bool(s.realize and s.versions_root)
        running = self._running_digest()
        if vid is not None and vid != self.active_version:
            if not can_realize:
                raise JobError("version", f"version_id {vid!r} does not match this worker's version "
                               f"{self.active_version!r}", hint=f"send the job to the endpoint built for {vid!r}, or "
                               "omit version_id; to switch versions at run time mount the versions and set "
                               "COMFYVER_ROOT and COMFYVER_REALIZE=1")
            await asyncio.to_thread(self._realize, vid)
        elif vid is not None and can_realize and running is not None and digest != running:
            mounted = self._mounted_digest(vid)
            if mounted not in (None, running) and digest in (None, mounted):  # the volume's lock changed
                await asyncio.to_thread(self._realize, vid)
        running = self._running_digest()
        if digest is not None and running is not None and digest != running:
            raise JobError("version", f"lock_digest {digest[:12]}... does not match the lock this worker runs "
                           f"(version {self.active_version!r}, lock {running[:12]}...)",
                           hint="the endpoint serves another state of the version: deploy the image built from your "
                                "lock, or lock the version the endpoint runs" + (
                                    "; with version_id the worker realizes the lock mounted at COMFYVER_ROOT"
                                    if can_realize else ""))

    def _running_digest(self) -> str | None:
        """The lock digest of the tree ComfyUI runs: the one its realize marker said when this ComfyUI started
        (the tree may be realized again under it on a shared volume), else COMFYVER_LOCK_DIGEST; None when the
        worker cannot know."""
        if self.process is not None and self.process.proc is not None:
            running = self.process.lock_digest
        else:  # an external ComfyUI (COMFY_URL): its tree as it is now
            home = self.process.home if self.process is not None else self.settings.comfy_home
            running = realized_digest(home) if home is not None else None
        return running or self.settings.lock_digest

    def _mounted_digest(self, vid: str) -> str | None:
        """The lock digest of `vid` as mounted at COMFYVER_ROOT now (None when it cannot be read)."""
        root = self.settings.versions_root
        if root is None:
            return None
        try:
            return lockfile.lock_digest(lockfile.read(project.lock_path(root, vid)))
        except (ComfyverError, OSError):
            return None

    def _realize(self, vid: str) -> None:
        s = self.settings
        try:
            from comfyver.realize.realize import realize
        except ImportError:
            raise JobError("version", f"version_id {vid!r}: this image has no comfyver.realize.realize",
                           hint="install comfyver in the image, or send the job to the endpoint built for "
                           f"{vid!r}") from None
        if self.process is None:
            raise JobError("version", f"version_id {vid!r}: cannot switch versions of an external ComfyUI "
                           "(COMFY_URL)", hint="unset COMFY_URL so the worker runs ComfyUI itself")
        assert s.versions_root is not None  # _check_version realizes only with COMFYVER_ROOT set
        try:
            home = realize(s.versions_root, vid, s.realize_dir / vid if s.realize_dir else None, s.models_dir, False,
                           system_site_packages=s.realize_system_site_packages)
        except Exception as exc:  # noqa: BLE001 - its message names worker files (paths, sizes, hashes): log only
            log.error("version_id %r: realize failed: %s", vid, redact(exc))
            raise JobError("version", f"version_id {vid!r}: realize failed on the worker",
                           hint=f"the worker's log says why; check the version with `comfyver check {vid}` "
                                "and the volume's free space") from None
        venv_python = Path(home) / ".venv" / "bin" / "python"
        self.settings = s = dataclasses.replace(s, comfy_home=Path(home))  # its input/ and output/ from now on
        new = ComfyProcess(s, home=Path(home), python=str(venv_python) if venv_python.exists() else None)
        with self._lock:  # swapped first, so the watcher never restarts the old one; close() stops the new one
            if self._closed:
                raise JobError("comfyui_down", f"version_id {vid!r}: the worker is stopping", hint="resubmit the job")
            old, self.process = self.process, new
        old.close()
        self.process.start()
        self.client.object_info = None
        if not self.process.wait_ready():
            raise JobError("comfyui_down", f"version_id {vid!r}: ComfyUI from the realized tree did not start",
                           log_tail=self.log_tail(), refresh_worker=True)
        self.active_version = vid

    def _output_target(self, inp: dict, out_dir: Path | None):
        s = self.settings
        if out_dir is not None:
            return "dir", None, ""
        mode = inp.get("output_mode", s.output_mode)
        if mode not in MODES:
            raise bad_input(f"output_mode: {mode!r} is not one of {', '.join(MODES)}", 'e.g. "output_mode": "base64"')
        prefix = clean_prefix(inp.get("gcs_prefix", s.gcs_prefix))
        if "gcs_bucket" in inp and not isinstance(inp["gcs_bucket"], str):
            raise bad_input("gcs_bucket: expected a bucket name")
        store = None
        if mode == "gcs":
            bucket = inp.get("gcs_bucket") or s.gcs_bucket or ""  # none: GCSStore says a bucket is needed
            store = self._stores.get(("gcs", bucket)) or GCSStore(s, bucket)
            self._stores[("gcs", bucket)] = store
        elif mode == "s3":
            store = self._stores.get("s3") or S3Store(s)
            self._stores["s3"] = store
        return mode, store, prefix

    async def _write_images(self, images, job_dir: str, deadline: float | None = None) -> dict[str, Path | None]:
        """Write the job's images into input/<job_dir>/ (or upload them there); name -> path."""
        if images is None:
            return {}
        s = self.settings
        if not isinstance(images, list):
            raise bad_input("images: expected a list of {name, image}", '[{"name": "in.png", "image": "<base64>"}]')
        decoded = []
        for i, item in enumerate(images):
            if not isinstance(item, dict) or set(item) - {"name", "image"} or "name" not in item or "image" not in item:
                raise bad_input(f"images[{i}]: expected {{\"name\", \"image\"}}",
                                '[{"name": "in.png", "image": "<base64, data: URI or https URL>"}]')
            name = safe_name(item["name"], f"images[{i}].name")
            data = await _stoppable(decode_image, item["image"], f"images[{i}] ({name})",
                                    s.allowed_fetch_hosts, s.max_input_bytes, deadline)
            decoded.append((name, data))
        if len({n for n, _ in decoded}) != len(decoded):
            raise bad_input("images: two images have the same name", "give every image its own name")
        written: dict[str, Path | None] = {}
        if s.input_dir is not None:
            folder = s.input_dir / job_dir
            for name, data in decoded:
                dest = folder / name
                tmp = dest.with_name(f".{name}.{uuid.uuid4().hex}.part")
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    tmp.write_bytes(data)
                    os.replace(tmp, dest)
                except OSError as exc:  # run_job removes the job's folder, the partial file with it
                    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    raise JobError("disk_full" if full else "storage",
                                   f"images: cannot write {name!r} ({len(data)} bytes) to ComfyUI's input folder: "
                                   f"{exc.strerror}", hint="the worker's disk is full; RunPod is asked for a fresh "
                                   "worker" if full else "check the worker's input folder", refresh_worker=full) from None
                written[name] = dest
        else:
            import aiohttp
            for name, data in decoded:
                form = aiohttp.FormData()
                form.add_field("image", data, filename=name)
                form.add_field("subfolder", job_dir)
                form.add_field("overwrite", "true")
                status, _ = await self.client.request("POST", "/upload/image", data=form)
                if status != 200:
                    raise JobError("comfyui", f"images: ComfyUI refused the upload of {name!r} (HTTP {status})")
                written[name] = None
        return written

    def _drop_job_inputs(self, job_dir: str) -> None:
        """Remove this job's input folder (its images only; shipped inputs are never touched)."""
        if self.settings.input_dir is not None:
            shutil.rmtree(self.settings.input_dir / job_dir, ignore_errors=True)

    # --- running a prompt -----------------------------------------------------------------------
    async def _execute(self, prompt: dict, job: dict, timeout: float | None,
                       extra: dict | None = None) -> tuple[str, dict]:
        pid = str(uuid.uuid4())
        q = self.client.listen(pid)
        queued = False
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._queue(prompt, pid, extra)
                except PromptRejected as exc:
                    raise self._rejected(exc) from None
                queued = True
                ui = await self._follow(pid, q, job, prompt)
                # the outputs ComfyUI recorded, not only those the websocket happened to carry (DL1)
                hist = await self.client.history(pid)
                if hist is not None and (hist.get("status") or {}).get("status_str") == "success":
                    ui = self._from_history(pid, hist) or ui
                return pid, ui
        except TimeoutError:
            if await self.client.interrupt(pid):
                raise JobError("timeout", f"the workflow did not finish within the job's timeout ({timeout:.1f} s "
                               "left for it); it was interrupted", hint="raise `timeout`, or make the workflow faster",
                               log_tail=self.log_tail()) from None
            raise self._hung("the workflow did not finish within the job's timeout and ComfyUI did not answer "
                             "/interrupt") from None
        except asyncio.CancelledError:
            if queued:
                await asyncio.shield(self.client.interrupt(pid))
            raise
        finally:
            self.client.unlisten(pid)

    async def _queue(self, prompt: dict, pid: str, extra: dict | None = None) -> None:
        """Queue the prompt. ComfyUI gone before it was queued (a crash just before the job, W6): wait for the
        restart and queue once more, instead of failing a job that never ran."""
        for attempt in (1, 2):
            try:
                await self.client.ensure_ws()
                await self.client.queue_prompt(prompt, pid, extra)
                return
            except ComfyUnreachable as exc:
                failure = exc
            if attempt == 2 or not await self._has_died():
                break
            await self.ensure_healthy()
        raise await self._comfy_lost(str(failure))

    async def _has_died(self) -> bool:
        """Our ComfyUI exited (or does within 2 s: a dying process is not reaped at once)."""
        if self.process is None:
            return False
        for _ in range(40):
            if not self.process.alive():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _follow(self, pid: str, q: asyncio.Queue, job: dict, prompt: dict) -> dict:
        ui: dict = {}
        last_sent = 0.0
        report = bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT")) and job.get("id") is not None
        while True:
            try:
                m = await asyncio.wait_for(q.get(), self.settings.hang_check)
            except TimeoutError:  # nothing for a while: a long node is fine, a ComfyUI that answers nothing is not
                if not await self.client.healthy() and not await self.client.healthy():
                    raise self._hung(f"ComfyUI sent nothing for {self.settings.hang_check:g} s and does not "
                                     "answer /system_stats") from None
                continue
            if m is WS_CLOSED:
                hist = await self._reconnect(pid)
                if hist is not None:
                    return self._from_history(pid, hist)
                continue
            kind, d = m.get("type"), m.get("data") or {}
            if kind == "executing":
                if d.get("node") is None:
                    return ui
            elif kind == "executed" and d.get("node") is not None:
                node_out = ui.setdefault(str(d["node"]), {})
                for k, v in (d.get("output") or {}).items():
                    node_out[k] = node_out.get(k, []) + v if isinstance(v, list) else v
            elif kind == "progress" and report:
                now = time.monotonic()
                if now - last_sent >= PROGRESS_INTERVAL or d.get("value") == d.get("max"):
                    last_sent = now
                    self._progress(job, d, prompt)
            elif kind == "execution_error":
                raise JobError("comfyui", f"node {d.get('node_id')!r} ({d.get('node_type')}) failed: "
                               f"{d.get('exception_type', 'error')}: {d.get('exception_message', '').strip()}",
                               node_id=str(d.get("node_id")), node_type=d.get("node_type"),
                               comfy_message=str(d.get("exception_message", "")).strip(), log_tail=self.log_tail(),
                               hint="see comfy_message and log_tail; fix the inputs of that node")
            elif kind == "execution_interrupted":
                raise JobError("interrupted", f"ComfyUI interrupted the workflow at node {d.get('node_id')!r}",
                               node_id=str(d.get("node_id")), node_type=d.get("node_type"),
                               hint="someone called /interrupt on this ComfyUI; resubmit the job")

    def _progress(self, job: dict, d: dict, prompt: dict) -> None:
        import runpod
        value, maximum = d.get("value") or 0, d.get("max") or 0
        node = str(d.get("node"))
        runpod.serverless.progress_update(job, {
            "status": "running", "node_id": node, "node_type": (prompt.get(node) or {}).get("class_type"),
            "step": value, "max": maximum,
            "percent": round(100.0 * value / maximum, 1) if maximum else None})

    async def _reconnect(self, pid: str) -> dict | None:
        """After the websocket dropped: reconnect; the prompt's history entry if it finished meanwhile."""
        delay = 0.05
        since = time.monotonic()
        while True:
            if self.process is not None and not self.process.alive():
                raise await self._comfy_lost("ComfyUI died while running the workflow")
            try:
                await self.client.ensure_ws()
                hist = await self.client.history(pid)
                if hist is not None and (hist.get("status") or {}).get("status_str") in ("success", "error"):
                    return hist
                return None
            except ComfyUnreachable:
                if time.monotonic() - since > 60:
                    raise await self._comfy_lost("lost the connection to ComfyUI for 60 s") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _from_history(self, pid: str, hist: dict) -> dict:
        status = hist.get("status") or {}
        if status.get("status_str") == "error":
            for event, d in status.get("messages") or []:
                if event == "execution_error":
                    raise JobError("comfyui", f"node {d.get('node_id')!r} ({d.get('node_type')}) failed: "
                                   f"{d.get('exception_message', '').strip()}", node_id=str(d.get("node_id")),
                                   node_type=d.get("node_type"), comfy_message=d.get("exception_message"),
                                   log_tail=self.log_tail())
            raise JobError("comfyui", f"prompt {pid} failed", log_tail=self.log_tail())
        return hist.get("outputs") or {}

    async def _comfy_lost(self, what: str) -> JobError:
        """The error for a job whose ComfyUI went away; starts a restart so the next job finds it healthy."""
        if self.process is not None:
            for _ in range(20):  # give a dying process a moment, so the log tail and exit code are final
                if not self.process.alive():
                    break
                await asyncio.sleep(0.05)
            tail = self.log_tail()
            note = self.process.exit_note()
            if not self.process.alive():
                self._begin_restart()
                return JobError("comfyui_died", f"{what} ({note}); it is being restarted",
                                hint="resubmit the job; if it keeps failing, the workflow may exhaust memory",
                                log_tail=tail)
        return JobError("comfyui_down", f"{redact(what)}", hint="resubmit the job", log_tail=self.log_tail(),
                        refresh_worker=not await self.client.healthy())

    def _hung(self, what: str) -> JobError:
        """ComfyUI is hung (e.g. stopped): kill it so the watcher restarts it; ask RunPod for a fresh worker
        when this worker cannot restart it (attached with COMFY_URL)."""
        tail = self.log_tail()
        if self.process is not None and self.process.proc is not None and self.process.alive():
            self.process.proc.kill()
            self._begin_restart()
            return JobError("comfyui_hung", f"{what}; it was killed and is being restarted",
                            hint="resubmit the job", log_tail=tail)
        return JobError("comfyui_hung", what, hint="the worker asks RunPod for a replacement; resubmit the job",
                        log_tail=tail, refresh_worker=True)

    def _rejected(self, exc: PromptRejected) -> JobError:
        body = exc.body if isinstance(exc.body, dict) else {}
        problems = []
        for nid, ne in (body.get("node_errors") or {}).items():
            for e in ne.get("errors") or []:
                problems.append({"node_id": str(nid), "node_type": ne.get("class_type"), "problem": e.get("type"),
                                 "message": f"node {nid!r} ({ne.get('class_type')}): {e.get('message')}: "
                                            f"{e.get('details')}"})
        err = body.get("error") or {}
        if problems:
            return validation_error(problems)
        return JobError("validation", f"ComfyUI refused the workflow: {err.get('message') or exc}",
                        comfy_message=str(err.get("details") or err.get("message") or exc.body)[:2000],
                        hint="check the workflow is in API format (Workflow > Export (API))")

    # --- outputs ------------------------------------------------------------------------------------
    async def _open(self, f: out_mod.OutputFile) -> tuple[BinaryIO, Path | None]:
        """The output file, open for reading (never through a symbolic link), and its path when read on disk;
        an output only ComfyUI can see is streamed from /view into a temporary file."""
        rel = out_mod.relative_path(f)
        if rel is None:
            raise JobError("comfyui", f"node {f.node_id!r} reported an output outside the output folder: "
                           f"{f.subfolder}/{f.filename}", node_id=f.node_id)
        base = self.settings.output_dir if f.type == "output" else None
        if base is not None:
            try:
                fh = await asyncio.to_thread(out_mod.open_output, base, rel)
            except out_mod.OutputRefused as exc:
                raise JobError("comfyui", f"node {f.node_id!r} reported the output {rel}, but {exc}; it was not "
                               "read", node_id=f.node_id, hint="a node must write its outputs as regular files in "
                               "ComfyUI's output folder, not links to files elsewhere") from None
            if fh is not None:
                return fh, base / rel
            if self.process is not None:
                raise _StaleOutput(rel)  # our own ComfyUI's file is gone: it answered from its cache (W1)
        fh = tempfile.TemporaryFile()
        try:
            await self.client.view_into(fh, f.filename, f.subfolder, f.type)
        except ComfyUnreachable as exc:
            fh.close()
            raise JobError("comfyui", f"cannot read output {rel} of node {f.node_id!r}: {exc}",
                           node_id=f.node_id) from None
        fh.seek(0)
        return fh, None

    async def _deliver(self, ui: dict, mode: str, store, prefix: str, job: dict, out_dir: Path | None) -> dict:
        files, texts = out_mod.collect(ui)
        entries: list[dict[str, Any]] = []  # the result's outputs (JSON)
        opened: list[tuple[dict[str, Any], BinaryIO]] = []
        sources: list[Path] = []
        with contextlib.ExitStack() as stack:
            for f in files:
                fh, path = await self._open(f)
                stack.callback(fh.close)
                entry: dict[str, Any] = {"node_id": f.node_id, "kind": f.kind,
                                         "filename": str(out_mod.relative_path(f)), "content_type": f.content_type,
                                         "size": os.fstat(fh.fileno()).st_size}
                entries.append(entry)
                opened.append((entry, fh))
                if path is not None:
                    sources.append(path)
            if mode == "base64":
                base64_entries(opened, self.settings.base64_max_bytes)  # sizes checked before anything is read
            elif mode == "dir":
                assert out_dir is not None  # _output_target's mode "dir" is the job's out_dir
                for entry, fh in opened:
                    dest = out_dir / entry["filename"]
                    await asyncio.to_thread(_copy_to, fh, dest, entry["size"])
                    entry["path"] = str(dest)
            else:
                job_id = job.get("id") or uuid.uuid4().hex
                for entry, fh in opened:
                    key = object_key(prefix, job_id, entry["filename"])
                    entry.update(await asyncio.to_thread(store.put, key, fh, entry["size"], entry["content_type"]))
        # delivered: the previous job's files go now (keeping a long-lived worker's disk small); this job's
        # stay until the next one is delivered, since ComfyUI's cache may name them again (W1)
        keep = {p.resolve() for p in sources}
        for p in self._kept:
            if p.resolve() not in keep:
                p.unlink(missing_ok=True)
        self._kept = sources
        result: dict[str, Any] = {"outputs": entries + texts}
        if mode == "gcs" and entries:
            result["gcs_url"], result["size"] = entries[0]["gcs_url"], entries[0]["size"]
        return result


def _copy_to(fh: BinaryIO, dest: Path, size: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in out_mod.chunks(fh, size):
            out.write(chunk)


_job_log_mark: contextvars.ContextVar[int | None] = contextvars.ContextVar("job_log_mark", default=None)


def _settle(fut: asyncio.Future, result, exc: BaseException | None) -> None:
    if not fut.done():
        fut.set_exception(exc) if exc is not None else fut.set_result(result)


async def _stoppable(fn, *args, **kw):
    """`fn(*args, stop=event, **kw)` in a daemon thread: cancelling the job sets `stop`, so a download does
    not outlive its job, and a stopping worker (SIGTERM) never waits for one."""
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def run():
        try:
            res = fn(*args, stop=stop, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting job
            loop.call_soon_threadsafe(_settle, fut, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, fut, res, None)

    threading.Thread(target=run, name="input-download", daemon=True).start()
    try:
        return await fut
    except asyncio.CancelledError:
        stop.set()
        raise


def _extra_data(inp: dict) -> dict | None:
    """ComfyUI's extra_data for the prompt: the Comfy.org API key (worker-comfyui's `comfy_org_api_key`)."""
    key = inp.get("comfy_org_api_key")
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise bad_input("comfy_org_api_key: expected the key as a string")
    return {"api_key_comfy_org": key.strip()}


def _as_worker_comfyui(result: dict) -> None:
    """Add worker-comfyui's result shape: images[{filename, type: base64|s3_url, data}] (image outputs only,
    as it returns), status success_no_images when there are none. Base64 data moves there (not sent twice)."""
    images = []
    for o in result.get("outputs", []):
        if o.get("kind") != "image":
            continue
        if "data" in o:
            images.append({"filename": o["filename"], "type": "base64", "data": o.pop("data")})
        elif o.get("signed_url"):
            images.append({"filename": o["filename"], "type": "s3_url", "data": o["signed_url"]})
        elif o.get("gcs_url") or o.get("path"):
            images.append({"filename": o["filename"], "type": "url", "data": o.get("gcs_url") or o["path"]})
    result["images"] = images
    if not images:
        result["status"] = "success_no_images"


def _remaining(deadline: float | None, timeout: float) -> float | None:
    """Seconds left of the job's deadline for running the prompt (None: no limit)."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise JobError("timeout", f"the job's timeout ({timeout} s) passed before the workflow could start",
                       hint="raise `timeout`; input downloads count towards it")
    return left


class _StaleOutput(Exception):
    """An output ComfyUI reported (from its cache) whose file no longer exists."""


def _point_at_job_inputs(prompt: dict, moved: dict[str, str], object_info: dict) -> None:
    """File inputs (LoadImage's `image`, upload widgets) naming a job image (`in.png`, `in.png [input]`) now name
    its per-job path; other inputs (a prompt text, a sampler, a filename prefix) are never touched."""
    if not moved:
        return
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for k in upload_inputs(object_info, node.get("class_type")) & set(inputs):
            v = inputs[k]
            if isinstance(v, str):
                name, sep, tag = v.partition(" [")
                if name in moved and (not sep or tag == "input]"):
                    inputs[k] = moved[name] + (" [input]" if sep else "")


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
