"""Handler overhead, measured side by side in one run against one real ComfyUI on the CPU.

    python bench/handler.py [--jobs 100] [--rss-jobs 500] [--start-rounds 9] [--worker-comfyui CHECKOUT]

1. start-up: bare ComfyUI (`python main.py --cpu` until /system_stats answers) vs the worker
   (`python -m handler` until it reports ComfyUI ready), alternating pairs; on a shared machine single
   start-ups vary by seconds, so the median of the per-pair differences is the figure, with its spread
   (min, max, standard deviation of the differences);
2. per job, interleaved: a 256x256 EmptyImage -> ImageInvert -> SaveImage workflow (a new colour every
   job, so ComfyUI's cache never short-cuts), three ways side by side:
   - a bare ComfyUI API client (queue, websocket wait, /history, /view);
   - the same client taking the handler's shortcuts (websocket kept open, outputs read from disk instead
     of /view): the honest peer for the handler's own cost;
   - through the handler in-process with base64 output; and through the runpod SDK's HTTP API
     (`python -m handler --rp_serve_api`, POST /runsync), which adds the SDK's HTTP and JSON;
   with `--worker-comfyui CHECKOUT` (a clone of github.com/runpod-workers/worker-comfyui; AGPL, so it is
   never copied into this repository), its handler too, on the same ComfyUI, in-process and through the
   same SDK HTTP API;
3. RSS of the handler's process across --rss-jobs more jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import comfyui as comfyui_support  # noqa: E402


def workflow(color: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    }


class BareClient:
    """What a plain ComfyUI API client does (ComfyUI's websockets_api_example.py): one websocket,
    POST /prompt, wait for `executing` node=None, GET /history/<id>, GET /view for each image.
    `output_dir`: read each image from ComfyUI's output folder instead of /view (the handler's shortcut)."""

    def __init__(self, url: str, output_dir: Path | None = None):
        self.url = url
        self.output_dir = output_dir
        self.client_id = uuid.uuid4().hex
        self.http = requests.Session()
        self.ws = websocket.create_connection(f"ws://{url.split('://', 1)[1]}/ws?clientId={self.client_id}")

    def run(self, prompt: dict) -> list[bytes]:
        pid = self.http.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}).json()["prompt_id"]
        while True:
            msg = self.ws.recv()
            if isinstance(msg, str):
                m = json.loads(msg)
                if m["type"] == "executing" and m["data"].get("node") is None and m["data"].get("prompt_id") == pid:
                    break
        hist = self.http.get(f"{self.url}/history/{pid}").json()[pid]
        out = []
        for node in hist["outputs"].values():
            for img in node.get("images", []):
                if self.output_dir is not None:
                    out.append((self.output_dir / img.get("subfolder", "") / img["filename"]).read_bytes())
                else:
                    out.append(self.http.get(self.url + "/view", params=img).content)
        return out


WORKER_COMFYUI_LOADER = """
import importlib.util, sys
checkout, host = sys.argv.pop(1), sys.argv.pop(1)
sys.path[:0] = [checkout, checkout + "/src"]
spec = importlib.util.spec_from_file_location("worker_comfyui_handler", checkout + "/handler.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
handler.COMFY_HOST = host
if __name__ == "__main__":
    import runpod
    runpod.serverless.start({"handler": handler.handler})
"""


def load_worker_comfyui(checkout: Path, comfy_url: str):
    """worker-comfyui's handler module from the user's checkout, pointed at `comfy_url` (it hard-codes :8188)."""
    ns = {"__name__": "worker_comfyui_loader"}
    argv = sys.argv
    sys.argv = [argv[0], str(checkout), comfy_url.split("://", 1)[1]]
    try:
        exec(WORKER_COMFYUI_LOADER, ns)
    finally:
        sys.argv = argv
    return ns["handler"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def bare_start(home: Path, port: int) -> float:
    """Bare ComfyUI with the folders the worker gives it (state folder, its database there): the same work."""
    from comfyver.realize import comfystate
    state = comfystate.prepare(home.parent / f"bare-state-{port}", home)
    t0 = time.perf_counter()
    c = comfyui_support.ComfyUI(home, port=port, args=comfystate.state_args(state))
    try:
        while True:
            if c.proc.poll() is not None:
                raise RuntimeError("bare ComfyUI exited")
            try:
                if requests.get(c.url + "/system_stats", timeout=1).ok:
                    return time.perf_counter() - t0
            except requests.RequestException:
                time.sleep(0.05)
    finally:
        c.stop()


def worker_start(home: Path, port: int) -> float:
    env = {**os.environ, "COMFY_HOME": str(home), "COMFY_PORT": str(port), "OUTPUT_MODE": "base64",
           "COMFYUI_STATE_DIR": str(home.parent / f"worker-state-{port}")}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "handler", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                          "--rp_api_port", str(comfyui_support.free_port())], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for line in p.stderr:
            if b"handler: ComfyUI ready" in line:
                return time.perf_counter() - t0
        raise RuntimeError("the worker exited before ComfyUI was ready")
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the worker and the ComfyUI it started (its own process group)
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--rss-jobs", type=int, default=500)
    ap.add_argument("--start-rounds", type=int, default=9)
    ap.add_argument("--worker-comfyui", type=Path, metavar="CHECKOUT",
                    help="a checkout of worker-comfyui, to run its handler side by side")
    a = ap.parse_args()
    if a.worker_comfyui and not (a.worker_comfyui / "handler.py").is_file():
        ap.error(f"--worker-comfyui {a.worker_comfyui}: no handler.py there (give a checkout of worker-comfyui)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-handler-"))
    home = comfyui_support.copy_tree(tmp / "ComfyUI")

    print(f"start-up ({a.start_rounds} round(s), alternating) ...", flush=True)
    bare_s, worker_s = [], []
    for _ in range(a.start_rounds):
        bare_s.append(bare_start(home, comfyui_support.free_port()))
        worker_s.append(worker_start(home, comfyui_support.free_port()))

    comfy = comfyui_support.ComfyUI(home).wait_ready()
    os.environ.update({"COMFY_URL": comfy.url, "COMFY_HOME": str(home), "OUTPUT_MODE": "base64"})
    from handler.settings import Settings
    from handler.worker import Worker
    worker = Worker(Settings())
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def through_handler(i: int) -> None:
        r = asyncio.run_coroutine_threadsafe(worker.handle({"id": f"b{i}", "input": {"workflow": workflow(i)}}),
                                             loop).result()
        assert "error" not in r and r["outputs"][0]["data"], r

    from tests.handler.env import LocalAPI
    api = LocalAPI({"COMFY_URL": comfy.url, "COMFY_HOME": str(home), "OUTPUT_MODE": "base64",
                    "RUNPOD_DEBUG_LEVEL": "ERROR"}, tmp / "api.log")

    def through_api(i: int) -> None:
        r = api.runsync({"workflow": workflow(i)})
        assert r.get("status") == "COMPLETED" and r["output"]["outputs"][0]["data"], r

    lanes = [("handler in-process", through_handler), ("handler via SDK /runsync", through_api)]
    wc_api = None
    if a.worker_comfyui:
        import contextlib
        import io
        wc = load_worker_comfyui(a.worker_comfyui.resolve(), comfy.url)

        def wc_in_process(i: int) -> None:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints several lines per job
                r = wc.handler({"id": f"w{i}", "input": {"workflow": workflow(i)}})
            assert "error" not in r and r["images"][0]["data"], r

        wc_api = LocalAPI({"COMFY_URL": "", "RUNPOD_DEBUG_LEVEL": "ERROR"}, tmp / "wc-api.log",
                          command=[sys.executable, "-c", WORKER_COMFYUI_LOADER, str(a.worker_comfyui.resolve()),
                                   comfy.url.split("://", 1)[1]])

        def wc_through_api(i: int) -> None:
            r = wc_api.runsync({"workflow": workflow(i)})
            assert r.get("status") == "COMPLETED" and r["output"]["images"][0]["data"], r
        lanes += [("worker-comfyui in-process", wc_in_process), ("worker-comfyui via /runsync", wc_through_api)]
    times_of = {label: [] for label, _ in lanes}

    bare = BareClient(comfy.url)
    short = BareClient(comfy.url, output_dir=home / "output")
    try:
        for i in range(5):  # warm-up: first executions load node code and fill caches
            bare.run(workflow(0x100000 + i))
            short.run(workflow(0x110000 + i))
            for k, (_, run) in enumerate(lanes):
                run(0x200000 + 0x10000 * k + i)
        t_bare, t_short = [], []
        for i in range(a.jobs):
            for times, run, base in ((t_bare, bare.run, 0x300000), (t_short, short.run, 0x600000)):
                t0 = time.perf_counter()
                imgs = run(workflow(base + i))
                times.append((time.perf_counter() - t0) * 1000)
                assert imgs and imgs[0][:4] == b"\x89PNG"
            for k, (label, run) in enumerate(lanes):
                t0 = time.perf_counter()
                run(0x800000 + 0x10000 * k + i)
                times_of[label].append((time.perf_counter() - t0) * 1000)

        rss0 = rss_mb()
        for i in range(a.rss_jobs):
            through_handler(0x500000 + i)
        rss1 = rss_mb()
    finally:
        api.stop()
        if wc_api is not None:
            wc_api.stop()
        comfy.stop()
        asyncio.run_coroutine_threadsafe(worker.client.close(), loop).result()
        shutil.rmtree(tmp, ignore_errors=True)

    t_handler, t_api = times_of["handler in-process"], times_of["handler via SDK /runsync"]
    b50, s50, h50, a50 = (statistics.median(t) for t in (t_bare, t_short, t_handler, t_api))
    print()
    diffs = [w - b for b, w in zip(bare_s, worker_s)]
    print(f"start-up to ready (s), {a.start_rounds} alternating pair(s): bare ComfyUI "
          f"{' '.join(f'{x:.2f}' for x in bare_s)}  worker {' '.join(f'{x:.2f}' for x in worker_s)}")
    spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    print(f"  worker - bare per pair: {' '.join(f'{d:+.2f}' for d in diffs)}")
    print(f"  median {statistics.median(diffs):+.2f} s, min {min(diffs):+.2f}, max {max(diffs):+.2f}, "
          f"stdev {spread:.2f} over {len(diffs)} pairs (target: median <= +1.00)")
    print(f"per job, {a.jobs} each, interleaved (ms):")
    for label, t in (("bare ComfyUI API (/view)", t_bare), ("bare, same shortcuts", t_short), *times_of.items()):
        print(f"  {label:<28} p50 {statistics.median(t):7.2f}  p90 {pct(t, 90):7.2f}  mean {statistics.mean(t):7.2f}")
    print(f"  overhead p50: handler vs same-shortcut client {h50 - s50:+.2f} ms (ratio {h50 / s50:.3f}); "
          f"vs plain client {h50 - b50:+.2f} ms; SDK HTTP API vs same-shortcut client {a50 - s50:+.2f} ms "
          "(target: handler vs same-shortcut client <= +2.00)")
    if a.worker_comfyui:
        w50, wa50 = (statistics.median(times_of[k]) for k in ("worker-comfyui in-process", "worker-comfyui via /runsync"))
        print(f"  side by side with worker-comfyui on the same ComfyUI: in-process {h50 - w50:+.2f} ms (ratio "
              f"{h50 / w50:.3f}); via the SDK's /runsync {a50 - wa50:+.2f} ms (ratio {a50 / wa50:.3f})")
    else:
        print("  worker-comfyui not run (give --worker-comfyui CHECKOUT to run its handler side by side)")
    print(f"RSS over {a.rss_jobs} handler jobs: {rss0:.1f} -> {rss1:.1f} MB ({rss1 - rss0:+.1f} MB, target < 20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
