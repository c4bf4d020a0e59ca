"""`comfyver switch <id> --at PATH`: make PATH (e.g. /workspace/ComfyUI on a pod's volume) the realized tree of a
version, atomically, and `comfyver run --at PATH`, which runs ComfyUI there and restarts it on a switch.

    PATH                        a symbolic link comfyver owns: -> .<name>.comfyver/versions/<id>
    .<name>.comfyver/versions/<id>/   each version realized (comfyver realize --into), kept for switching back
    .<name>.comfyver/state/     ComfyUI's input/output/user/temp, shared by every version run at PATH
    .<name>.comfyver/run.pid    the `comfyver run --at PATH` supervising ComfyUI there (it restarts on SIGHUP)
    .<name>.comfyver/history.json   the switches, newest last

The version is realized beside PATH first (nothing at PATH changes meanwhile; models come from the shared model
store as for any realize), then one rename replaces the link: a reader of PATH sees the old tree or the new one,
never a mix. A PATH that is a real folder or a link comfyver did not make is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_json, atomic_write_text
from comfyver.realize import localrun, realize

RESTART_WAIT = 15.0  # seconds ComfyUI gets to stop on SIGINT before it is killed


@dataclass
class Switched:
    at: str
    version: str
    previous: str | None
    tree: str
    restarted: int | None  # the pid of the `comfyver run --at` told to restart, if one runs


def home(at: Path) -> Path:
    """Where comfyver keeps PATH's versions, state and run.pid: beside it, `.<name>.comfyver`."""
    return at.parent / f".{at.name}.comfyver"


def _at(path: Path) -> Path:
    at = Path(os.path.abspath(path))  # the link itself: never resolved
    if at.name in ("", ".", ".."):
        raise UsageError(f"--at {path}: give the path of the ComfyUI folder, e.g. /workspace/ComfyUI")
    return at


def current(at: Path) -> str | None:
    """The version PATH points at; None when PATH does not exist. A PATH comfyver does not own is an error."""
    at = _at(at)
    if not at.is_symlink():
        if at.exists():
            raise ComfyverError(f"--at {at}: is a folder (or file) that `comfyver switch` did not make; it is left as it is",
                                hint="move it aside (e.g. to ComfyUI.orig; `comfyver import --from-install` can make "
                                     "a version of it) or give another --at")
        return None
    target = os.readlink(at)
    parts = Path(target).parts
    if len(parts) != 3 or parts[0] != home(at).name or parts[1] != "versions":
        raise ComfyverError(f"--at {at}: is a link to {target}, which `comfyver switch` did not make; it is left as it is",
                            hint="remove the link or give another --at")
    return lockfile.check_version_id(parts[2])


def switch(root: Path, vid: str, at: Path, *, models_dir: Path | None = None, offline: bool = False,
           system_site_packages: bool = False, uv_args: list[str] | None = None,
           reporter: realize.Reporter = realize.QUIET) -> Switched:
    """Realize `vid` beside PATH, then point PATH at it with one rename; tell a running `comfyver run --at PATH`."""
    at = _at(at)
    lockfile.check_version_id(vid)
    current(at)  # refuse a foreign PATH before any work
    h = home(at)
    (h / "versions").mkdir(parents=True, exist_ok=True)
    with FileLock(str(h / ".switch.lock")):
        previous = current(at)
        tree = realize.realize(root, vid, h / "versions" / vid, models_dir, offline, reporter=reporter,
                               system_site_packages=system_site_packages, uv_args=uv_args)
        tmp = at.parent / f".{at.name}.link-{uuid.uuid4().hex[:8]}"
        os.symlink(f"{h.name}/versions/{vid}", tmp)
        try:
            os.replace(tmp, at)  # atomic: the old link or the new one
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _record(h, previous, vid)
    return Switched(str(at), vid, previous, str(tree), _tell_runner(h))


def _record(h: Path, previous: str | None, vid: str) -> None:
    path = h / "history.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = []
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": previous, "to": vid})
    atomic_write_json(path, history[-100:])


def _runner_pid(h: Path) -> int | None:
    """The pid in run.pid when that process is alive and is a `comfyver run --at` (its command line says so)."""
    try:
        pid = int((h / "run.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"--at" in cmdline and any(b"comfyver" in a for a in cmdline) else None


def _tell_runner(h: Path) -> int | None:
    pid = _runner_pid(h)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
            return pid
    return None


def history(at: Path) -> list[dict]:
    try:
        return list(json.loads((home(_at(at)) / "history.json").read_text()))
    except (OSError, ValueError):
        return []


def as_json(s: Switched) -> dict:
    return asdict(s)


def run_at(root: Path, at: Path, comfy_args: list[str]) -> int:
    """Run ComfyUI from the version PATH points at until it exits on its own or this process is interrupted; on
    SIGHUP (sent by `comfyver switch`) stop it and start it again on the version PATH points at now."""
    at = _at(at)
    h = home(at)
    if current(at) is None:
        raise ComfyverError(f"--at {at}: no version there yet", hint=f"`comfyver switch <id> --at {at}` first")
    h.mkdir(parents=True, exist_ok=True)
    atomic_write_text(h / "run.pid", f"{os.getpid()}\n")
    restart = [False]
    old = signal.signal(signal.SIGHUP, lambda *_: restart.__setitem__(0, True))
    state = Path(os.environ.get("COMFYVER_STATE_DIR") or h / "state")  # one state for every version run here
    try:
        while True:
            vid = current(at)
            assert vid is not None
            tree = h / "versions" / vid  # the real folder: a later switch does not move files under it
            restart[0] = False
            proc = localrun.start(root, vid, tree, comfy_args, state)
            try:
                while proc.poll() is None and not restart[0]:
                    time.sleep(0.1)
            except KeyboardInterrupt:
                return _stop(proc)
            if not restart[0]:
                return proc.returncode
            _stop(proc)
    finally:
        signal.signal(signal.SIGHUP, old)
        with contextlib.suppress(OSError, ValueError):
            if int((h / "run.pid").read_text()) == os.getpid():
                (h / "run.pid").unlink()


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=RESTART_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
