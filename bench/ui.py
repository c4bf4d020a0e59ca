"""Benchmark: the extra latency per job of the `comfyver ui` page over `comfyver run --endpoint`, same job, same worker.

    python bench/ui.py [--jobs 20]

One version (the real ComfyUI 0.3.75, the example's node) realized with its model and served by the real handler
behind the runpod SDK's local API: the endpoint. Interleaved, per job (a 16x16 EmptyImage -> ImageInvert ->
SaveImage, a new colour each time):
- `comfyver run`'s path: jobclient.run_job against the endpoint, in-process (no CLI start-up counted), outputs
  saved to disk;
- the page's path: POST /prompt to the page's ComfyUI with a client id, then its websocket until the prompt
  is done (what the page waits for), the output saved by the bridge and announced to the page.
Printed: median and p90 of each, and the median difference (the UI's extra latency) with its spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from comfyver.ship import jobclient  # noqa: E402

from tests.handler import env as henv  # noqa: E402
from tests.support import comfyui as comfyui_support  # noqa: E402
from tests.test_ui import UI, build_site  # noqa: E402


def workflow(color: int) -> dict:
    return henv.invert_workflow(color, size=16, prefix="bench")


def page_job(ui, ws, client_id: str, color: int) -> None:
    pid = requests.post(ui.url + "/prompt", json={"prompt": workflow(color), "client_id": client_id},
                        cookies=ui.cookies, timeout=30).json()["prompt_id"]
    got_output, seen = False, []
    while True:
        msg = ws.recv()
        if not isinstance(msg, str):
            continue
        m = json.loads(msg)
        data = m.get("data", {})
        if data.get("prompt_id") != pid:
            continue
        seen.append(m["type"])
        if m["type"] == "executed":
            got_output = True
        if m["type"] == "execution_error":
            raise RuntimeError(f"page job failed: {data.get('exception_message')}")
        if m["type"] == "executing" and data.get("node") is None:
            assert got_output, f"the page's job ended without an output: {seen}"
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    site = build_site(tmp, comfyui_support.copy_tree(tmp / "comfyui-src"))
    try:
        ui = UI(site, "bench", "--local", site["api"].url)
        backend = jobclient.LocalBackend(site["api"].url)
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://{ui.url.split('://', 1)[1]}/ws?clientId={client_id}", timeout=120,
                                         cookie="; ".join(f"{k}={v}" for k, v in ui.cookies.items()))
        out = tmp / "run-out"
        for i in range(3):  # warm-up
            jobclient.run_job(backend, {"workflow": workflow(0x100 + i)}, out, poll=0.1)
            page_job(ui, ws, client_id, 0x200 + i)
        t_run, t_page = [], []
        for i in range(a.jobs):
            t0 = time.perf_counter()
            r = jobclient.run_job(backend, {"workflow": workflow(0x10000 + i)}, out, poll=0.1)
            t_run.append(time.perf_counter() - t0)
            assert r.status == "COMPLETED" and r.files, r.error
            t0 = time.perf_counter()
            page_job(ui, ws, client_id, 0x20000 + i)
            t_page.append(time.perf_counter() - t0)
        ws.close()
    finally:
        site["close"]()
        shutil.rmtree(tmp, ignore_errors=True)

    def p90(xs):
        return sorted(xs)[round(0.9 * (len(xs) - 1))]
    diffs = [p - r for r, p in zip(t_run, t_page)]
    print(f"per job, {a.jobs} each, interleaved (ms):")
    for label, t in (("comfyver run --local (jobclient)", t_run), ("comfyver ui page (POST /prompt + ws)", t_page)):
        print(f"  {label:<38} p50 {statistics.median(t) * 1000:8.1f}  p90 {p90(t) * 1000:8.1f}")
    print(f"  extra latency of the page: median {statistics.median(diffs) * 1000:+.1f} ms (min {min(diffs) * 1000:+.1f}, "
          f"max {max(diffs) * 1000:+.1f}, stdev {statistics.stdev(diffs) * 1000:.1f}); ratio "
          f"{statistics.median(t_page) / statistics.median(t_run):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
