"""Shared test environment for the handler tests: one ComfyUI (started by a real Worker) per test process,
one background event loop, workflow builders, and the local storage servers."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.support import comfyui as comfyui_support
from tests.support.gcs import GCSEmulator  # noqa: F401  (re-exported for the handler tests)
from tests.support.tcpproxy import TCPProxy  # noqa: F401  (re-exported for the handler tests)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
_state: dict = {}


def free_port() -> int:
    return comfyui_support.free_port()


def loop() -> asyncio.AbstractEventLoop:
    if "loop" not in _state:
        lp = asyncio.new_event_loop()
        threading.Thread(target=lp.run_forever, daemon=True).start()
        _state["loop"] = lp
    return _state["loop"]


def run(coro, timeout: float = 300):
    """Run `coro` on the shared background loop (the worker's websocket lives there)."""
    return asyncio.run_coroutine_threadsafe(coro, loop()).result(timeout)


def comfy_tree(base: Path) -> Path:
    home = comfyui_support.copy_tree(base / "ComfyUI")
    shutil.copytree(HERE / "custom_nodes" / "comfyver_test_nodes", home / "custom_nodes" / "comfyver_test_nodes")
    return home


def shared_worker(tmp_root: Path):
    """The Worker (and its ComfyUI) shared by all handler tests in this process."""
    if "worker" not in _state:
        from handler.settings import Settings
        from handler.worker import Worker
        home = comfy_tree(tmp_root)
        settings = Settings(comfy_home=home, comfy_port=free_port(), output_mode="base64", comfy_url=None,
                            allowed_fetch_hosts=[], version_id="test-version", log_tail_lines=40)
        w = Worker(settings)
        w.start()
        _state["worker"] = w
        atexit.register(w.close)
    return _state["worker"]


def attached_worker(base, **overrides):
    """A second Worker on the shared ComfyUI (COMFY_URL), with its own settings."""
    from dataclasses import replace

    from handler.worker import Worker
    # that ComfyUI's folders, as a user attaching to one names them (COMFY_ARGS)
    dirs = ["--input-directory", str(base.settings.input_dir), "--output-directory", str(base.settings.output_dir)]
    s = replace(base.settings, comfy_url=overrides.pop("comfy_url", base.client.url),
                comfy_args=overrides.pop("comfy_args", dirs), **overrides)
    return Worker(s)


# --- workflows ---------------------------------------------------------------------------------------
def invert_workflow(color: int = 0x336699, size: int = 64, prefix: str = "inv") -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def slow_workflow(seconds: float = 3.0, steps: int = 10, color: int = 1) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
        "2": {"class_type": "ComfyverSlow", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}},
    }


# --- servers -----------------------------------------------------------------------------------------
class LocalAPI:
    """`python -m handler --rp_serve_api`: the runpod SDK's own local API server in front of the handler."""

    def __init__(self, env: dict, log: Path, command: list[str] | None = None):
        """`command`: another serverless script to serve the same way (default: this worker)."""
        import os
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.log = log
        self.env = env
        command = command or [sys.executable, "-m", "handler"]
        self.proc = subprocess.Popen([*command, "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                                      "--rp_api_port", str(self.port)], cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **env})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("local API exited:\n" + log.read_text()[-3000:])
            try:
                requests.get(self.url + "/docs", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("local API did not start:\n" + log.read_text()[-3000:])

    def runsync(self, job_input, timeout: float = 120) -> dict:
        return requests.post(self.url + "/runsync", json={"input": job_input}, timeout=timeout).json()

    def stop(self):
        self.proc.terminate()  # the worker stops its ComfyUI on SIGTERM
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
