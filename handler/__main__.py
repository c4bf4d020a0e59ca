"""`python -m handler` (RunPod worker; `--rp_serve_api` for the SDK's local API) or `python -m handler cli`.

ComfyUI is started first, so it boots while the rest of the worker is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from handler.comfy_process import ComfyProcess
from handler.settings import Settings


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m handler cli",
        description="Run one job without RunPod and write its outputs to a folder. "
                    "Example: COMFY_HOME=~/ComfyUI python -m handler cli --input job.json --out out/")
    p.add_argument("--input", required=True, help='job file: {"input": {...}} or just the input object')
    p.add_argument("--out", required=True, help="folder for the output files (created if missing)")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    a = p.parse_args(argv)
    try:
        job = json.loads(Path(a.input).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read job file {a.input}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(job, dict):
        print(f"error: job file {a.input} must hold a JSON object", file=sys.stderr)
        return 2
    if "input" not in job:
        job = {"input": job}
    job.setdefault("id", "cli")
    settings = Settings()
    from handler.worker import Worker, configure_logging
    configure_logging()
    worker = Worker(settings)
    try:
        worker.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        result = _run_once(worker, job, Path(a.out))
    finally:
        worker.close()
    if a.json:
        print(json.dumps(result, indent=2))
    elif "error" in result:
        e = result["error"]
        print(f"error ({e['type']}): {e['message']}" + (f"\n  hint: {e['hint']}" if e.get("hint") else ""),
              file=sys.stderr)
    else:
        for o in result["outputs"]:
            print(f"{o['kind']:6} node {o['node_id']:>4}  " + (o.get("path") or repr(o.get("text"))))
        print(f"done in {result['timings_ms']['total']:.0f} ms")
    return 1 if "error" in result else 0


def _run_once(worker, job: dict, out_dir: Path) -> dict:
    """One job on its own event loop (its client session closed with it), outputs written to `out_dir`; a JobError
    becomes the job's `{"error": ...}` result, as a job of the SDK's gets it."""
    from handler.errors import JobError

    async def run() -> dict:
        try:
            return await worker.run_job(job, out_dir=out_dir)
        finally:
            await worker.client.close()
    try:
        return asyncio.run(run())
    except JobError as exc:
        return {"error": exc.to_dict()}


def _warm_up(worker, label: str, path: Path) -> str | None:
    """Run the warm-up job once (COMFY_WARMUP's, else the version's warmup.json: Settings.warmup_job, which gives
    `label`), before the worker takes jobs, so the first real job does not pay model loading
    (worker-comfyui #90: ~45 s cold against 15 s warm). The file holds a job (`{"input": {...}}`, as `cli` takes) or
    a bare workflow; its outputs go to a temp folder and are dropped. Returns why it failed (the worker then exits:
    a version that cannot run its own warm-up should not take jobs), or None."""
    import tempfile
    import time

    try:
        job = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"{label}: cannot read it ({exc})"
    if not isinstance(job, dict):
        return f"{label}: must hold a JSON object (a job or a workflow)"
    inp = job.get("input", job)
    if not isinstance(inp, dict) or "workflow" not in inp:
        inp = {"workflow": inp}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comfyver-warmup-") as out:
        result = _run_once(worker, {"id": "warmup", "input": inp}, Path(out))
    if "error" in result:
        e = result["error"]
        return f"{label}: the warm-up job failed ({e.get('type')}): {e.get('message')}"
    print(f"handler: warm-up job done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return None


def _fast_cpu_brand() -> None:
    """The runpod SDK asks py-cpuinfo for the CPU's name at import, which spends ~1 s of CPU in a subprocess
    (while ComfyUI is starting). /proc/cpuinfo has the same name for free."""
    try:
        import cpuinfo
    except ImportError:
        return

    def brand() -> dict:
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        return {"brand_raw": line.split(":", 1)[1].strip()}
        except OSError:
            pass
        import platform
        return {"brand_raw": platform.processor() or "unknown"}

    cpuinfo.get_cpu_info = brand


def _import_worker_modules() -> None:
    """Import the SDK and the worker at a lower CPU priority (this thread only), so ComfyUI's own start-up,
    running at the same time, gets the CPU first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass
    _fast_cpu_brand()
    import runpod  # noqa: F401

    import handler.worker  # noqa: F401


def _stop_comfyui_on_sigterm(process: ComfyProcess) -> None:
    """SIGTERM while starting up takes ComfyUI along (once serving, the SDK handles SIGTERM and main's finally stops it)."""
    def stop(signum, frame):
        process.close()
        os._exit(128 + signum)  # at once: no watcher gets to restart it

    signal.signal(signal.SIGTERM, stop)


@contextlib.contextmanager
def _sigterm_deadline(worker, grace: float):
    """While the SDK serves, a SIGTERM also starts a `grace`-second clock; when it runs out, ComfyUI is stopped
    and the worker exits 143. The SDK's own graceful stop (and uvicorn's, for the local API) waits for running
    jobs without a limit, a job stuck in a download included. They install their SIGTERM handler once serving
    starts, so each handler installed meanwhile is wrapped to start the clock first."""
    real_signal = signal.signal
    started = threading.Event()

    def give_up():
        print(f"handler: jobs still running {grace:g} s after SIGTERM; stopping ComfyUI and exiting",
              file=sys.stderr, flush=True)
        worker.close()
        os._exit(128 + signal.SIGTERM)

    def install(sig, handler):
        if sig == signal.SIGTERM and callable(handler):
            sdk_handler = handler

            def handler(signum, frame):
                if not started.is_set():
                    started.set()
                    clock = threading.Timer(grace, give_up)
                    clock.daemon = True  # a stop that ends in time is not held by it
                    clock.start()
                sdk_handler(signum, frame)
        return real_signal(sig, handler)

    signal.signal = install
    try:
        yield
    finally:
        signal.signal = real_signal


def main() -> int:
    if sys.argv[1:2] == ["cli"]:
        return cli_main(sys.argv[2:])
    if sys.argv[1:2] == ["preflight"]:  # the GPU fitness check, by hand
        from handler import preflight
        try:
            print(json.dumps(preflight.gpu_preflight(Settings())))
        except RuntimeError as exc:
            print(f"handler: {exc}", file=sys.stderr)
            return 1
        return 0
    # the SDK logs every job result (base64 payloads, presigned URLs) at DEBUG, its default: INFO unless asked
    os.environ.setdefault("RUNPOD_DEBUG_LEVEL", "INFO")
    settings = Settings()
    process = None if settings.comfy_url else ComfyProcess(settings)
    if process is not None:
        _stop_comfyui_on_sigterm(process)
        try:
            process.start()
        except RuntimeError as exc:
            print(f"handler: {exc}", file=sys.stderr)
            return 1
    importer = threading.Thread(target=_import_worker_modules, name="import-worker", daemon=True)
    importer.start()
    if process is not None and not process.wait_ready():
        print(f"handler: ComfyUI did not become ready ({process.exit_note()}); last log lines:\n"
              + "\n".join(process.tail(settings.log_tail_lines)), file=sys.stderr)
        process.stop()
        return 1
    importer.join()
    import runpod

    from handler.worker import Worker, configure_logging
    configure_logging()
    worker = Worker(settings, process=process)
    try:
        worker.start()
    except RuntimeError as exc:
        print(f"handler: {exc}", file=sys.stderr)
        worker.close()
        return 1
    print(f"handler: ComfyUI ready at {worker.client.url}", file=sys.stderr, flush=True)
    warmup = settings.warmup_job()
    if warmup is not None and (problem := _warm_up(worker, *warmup)):
        print(f"handler: {problem}", file=sys.stderr)
        worker.close()
        return 1
    from handler import preflight
    preflight.register(settings)  # the SDK runs it before the first job, on RunPod only
    try:
        with _sigterm_deadline(worker, settings.stop_grace):
            runpod.serverless.start({"handler": worker.handle})  # returns after the SDK's own SIGTERM/SIGINT stop
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
