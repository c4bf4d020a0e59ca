"""The ComfyUI server process: start once, wait for /system_stats, keep a log tail, restart when it dies."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from comfyver.base import fsutil, project
from comfyver.realize import comfystate

from handler.settings import MODEL_FOLDERS, Settings

DIGEST = re.compile(r"[0-9a-f]{64}")  # a lock digest (lockfile.lock_digest): what a job may name, what a marker holds


def realized_digest(home: Path) -> str | None:
    """The lock digest the realize marker in `home` says the tree was built from; None for a tree without one."""
    try:
        from comfyver.realize.realize import read_marker
    except ImportError:
        return None
    marker = read_marker(home)
    lock = marker.get("lock") if isinstance(marker, dict) else None
    return lock if isinstance(lock, str) and DIGEST.fullmatch(lock) else None



def has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


class LogRing:
    """The last `maxlen` lines of ComfyUI's output, numbered: `total` counts every line ever appended, so a job
    can ask for the lines written since it started (`since`)."""

    def __init__(self, maxlen: int):
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self.total = 0

    def append(self, line: str) -> None:
        self._lines.append(line)
        self.total += 1

    def __iter__(self):
        return iter(list(self._lines))

    def since(self, mark: int) -> list[str]:
        new = self.total - mark
        return list(self._lines)[-new:] if new > 0 else []


class ComfyProcess:
    """`python main.py` in COMFY_HOME on 127.0.0.1:COMFY_PORT, stdout+stderr kept in a ring buffer."""

    def __init__(self, settings: Settings, home: Path | None = None, python: str | None = None):
        self.settings = settings
        # COMFY_MODELS=cached: the worker's own tree gets the version's HF models from the cache (handler/hfcache.py)
        self.cached_models = settings.models_placement == "cached" and home is None
        self._cached_yaml: Path | None = None
        self.home = Path(home or settings.comfy_home or "")
        self.lock_digest: str | None = None  # the tree's lock when this ComfyUI was started (realized_digest)
        self.python = python or settings.comfy_python or sys.executable
        self.port = settings.comfy_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = LogRing(2000)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_exit: int | None = None
        self._reader: threading.Thread | None = None
        # a start and close() never overlap (reentrant: the SIGTERM handler may run in the middle of a start)
        self._lock = threading.RLock()
        self.closed = False

    def command(self) -> list[str]:
        args = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch"]
        if not has_gpu() and "--cpu" not in self.settings.comfy_args:
            args.append("--cpu")
        if self.settings.models_dir:
            args += ["--extra-model-paths-config", str(self._models_yaml(self.settings.models_dir))]
        if self._cached_yaml is not None:
            args += ["--extra-model-paths-config", str(self._cached_yaml)]
        from handler import jobmodels  # the folders that show each job its own models (job input `models`)
        args += jobmodels.comfy_args(self.settings)
        return args + comfystate.state_args(self.settings.state_dir, self.settings.comfy_args) + self.settings.comfy_args

    def _models_yaml(self, models_dir: Path) -> Path:
        """MODELS_DIR's folders for ComfyUI, in the state folder: one file, rewritten on each start (not a new
        temp file per start that nothing removes)."""
        lines = ["comfyver_models:", f"  base_path: {str(models_dir)!r}"]
        lines += [f"  {f}: {f}" for f in MODEL_FOLDERS]
        path = self.settings.state_dir / "extra_model_paths.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        if not (self.home / "main.py").is_file():
            raise RuntimeError(f"COMFY_HOME={self.home} has no main.py; point COMFY_HOME at a ComfyUI tree")
        with self._lock:
            if self.closed:  # e.g. the watcher restarting it while the worker stops: nothing may outlive close()
                raise RuntimeError("ComfyUI is not started again: the worker is stopping")
            comfystate.prepare(self.settings.state_dir, self.home, self.settings.input_dir)
            if self.cached_models and self._cached_yaml is None:  # once: verified, linked, in a yaml for ComfyUI
                from handler import hfcache
                try:
                    self._cached_yaml = hfcache.place(self.settings).yaml
                except hfcache.CachedModelError as exc:
                    raise RuntimeError(str(exc)) from None
            # what this ComfyUI loads: the tree on disk may be realized again later (a shared volume) while it runs
            self.lock_digest = realized_digest(self.home)
            cmd = self.command()
            self.log.append(f"[handler] starting ComfyUI: {' '.join(cmd)}")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            # bytecode out of the tree too, in a cache shared by restarts and workers
            env.update(comfystate.bytecode_env(project.cache_dir() / "pycache"))  # Python mirrors source paths there
            try:
                self.proc = subprocess.Popen(cmd, cwd=self.home, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            except OSError as exc:
                raise RuntimeError(f"cannot start ComfyUI with COMFY_PYTHON={self.python}: {exc.strerror}; "
                                   "point COMFY_PYTHON at a Python interpreter") from None
            self.starts += 1
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        out = proc.stdout
        assert out is not None  # started with stdout=PIPE
        for raw in out:
            self.log.append(raw.decode("utf-8", "replace").rstrip("\n"))
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Poll /system_stats until it answers; False if the process exits or `timeout` passes."""
        deadline = time.monotonic() + (timeout or self.settings.comfy_start_timeout)
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)

    def close(self) -> None:
        """Stop ComfyUI for good: a start racing this one (the watcher's restart) either finished before, and its
        process is killed here, or fails."""
        with self._lock:
            self.closed = True
        self.stop()

    def restart(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            self.last_exit = self.proc.returncode
        self.stop()
        self.log.append("[handler] restarting ComfyUI")
        self.start()
        return self.wait_ready()

    def tail(self, n: int, since: int | None = None) -> list[str]:
        """The last `n` lines (only those written after line number `since`, if given)."""
        lines = self.log.since(since) if since is not None else list(self.log)
        return lines[-n:] if n > 0 else []

    def exit_note(self) -> str:
        """How ComfyUI last ended (the previous process's code if it has been restarted since)."""
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            rc = self.last_exit
        return f"ComfyUI exited with code {rc}" if rc is not None else "ComfyUI is running"
