"""`comfyver switch <id> --at PATH`: make PATH (e.g. /workspace/ComfyUI on a pod's volume) the realized tree of a
version, atomically, and `comfyver run --at PATH`, which runs ComfyUI there and restarts it on a switch.

    PATH                        a symbolic link comfyver owns: -> .<name>.comfyver/versions/<id>@<build>
    .<name>.comfyver/versions/<id>@<build>/   a version realized (comfyver realize --into); <build>: the digest of
                                what it is realized from (lock, uv.lock, pyproject, model store), so a changed
                                lock is realized into a new folder and never over the one PATH points at
    .<name>.comfyver/state/     ComfyUI's input/output/user/temp, shared by every version run at PATH
    .<name>.comfyver/run.lock   held (flock) by the one `comfyver run --at PATH` supervising ComfyUI there
    .<name>.comfyver/run.pid    its pid; it restarts ComfyUI on SIGHUP, which switch sends
    .<name>.comfyver/history.json   the switches, newest last

The version is realized beside PATH first (nothing at PATH changes meanwhile; models come from the shared model
store as for any realize), then one rename replaces the link: a reader of PATH sees the old tree or the new one,
never a mix. The tree PATH pointed at before stays (switching back only moves the link); older builds of the
same version are removed. A PATH that is a real folder or a link comfyver did not make is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from comfyver.base import lockfile, project
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
    changed: bool = True   # False: PATH already pointed at this build of the version (nothing was done)


def home(at: Path) -> Path:
    """Where comfyver keeps PATH's versions, state and run.pid: beside it, `.<name>.comfyver`."""
    return at.parent / f".{at.name}.comfyver"


def _at(path: Path) -> Path:
    at = Path(os.path.abspath(path))  # the link itself: never resolved
    if at.name in ("", ".", ".."):
        raise UsageError(f"--at {path}: give the path of the ComfyUI folder, e.g. /workspace/ComfyUI")
    return at


def _target(at: Path) -> str | None:
    """PATH's link target (`<home>/versions/<id>@<build>`), checked; None when PATH does not exist. A PATH comfyver
    does not own is an error."""
    at = _at(at)
    if not at.is_symlink():
        if at.exists():
            raise ComfyverError(f"--at {at}: is a folder (or file) that `comfyver switch` did not make; it is left as it is",
                                hint="move it aside (e.g. to ComfyUI.orig; `comfyver import --from-install` can make "
                                     "a version of it) or give another --at")
        return None
    target = os.readlink(at)
    parts = Path(target).parts
    if len(parts) != 3 or parts[0] != home(at).name or parts[1] != "versions" or "@" not in parts[2]:
        raise ComfyverError(f"--at {at}: is a link to {target}, which `comfyver switch` did not make; it is left as it is",
                            hint="remove the link or give another --at")
    lockfile.check_version_id(parts[2].partition("@")[0])
    return parts[2]


def current(at: Path) -> str | None:
    """The version PATH points at; None when PATH does not exist."""
    target = _target(at)
    return target.partition("@")[0] if target else None


def build_name(root: Path, vid: str, models_dir: Path | None, system_site_packages: bool) -> str:
    """`<id>@<12 hex>`: the folder a version is realized into, named by what realize builds it from."""
    lock = lockfile.read(project.lock_path(root, vid))
    want = {**realize.stamp(root, vid, lock, realize.store_folder(models_dir)), "sss": system_site_packages}
    return f"{vid}@{hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:12]}"


def switch(root: Path, vid: str, at: Path, *, models_dir: Path | None = None, offline: bool = False,
           system_site_packages: bool = False, uv_args: list[str] | None = None,
           reporter: realize.Reporter = realize.QUIET) -> Switched:
    """Realize `vid` beside PATH, then point PATH at it with one rename; tell a running `comfyver run --at PATH`."""
    at = _at(at)
    lockfile.check_version_id(vid)
    _target(at)  # refuse a foreign PATH before any work
    h = home(at)
    (h / "versions").mkdir(parents=True, exist_ok=True)
    with FileLock(str(h / ".switch.lock")):
        before = _target(at)
        build = build_name(root, vid, models_dir, system_site_packages)
        tree = realize.realize(root, vid, h / "versions" / build, models_dir, offline, reporter=reporter,
                               system_site_packages=system_site_packages, uv_args=uv_args)
        previous = before.partition("@")[0] if before else None
        if before == build:  # already there: no link to move, no restart
            return Switched(str(at), vid, previous, str(tree), None, changed=False)
        tmp = at.parent / f".{at.name}.link-{uuid.uuid4().hex[:8]}"
        os.symlink(f"{h.name}/versions/{build}", tmp)
        try:
            os.replace(tmp, at)  # atomic: the old link or the new one
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _record(h, previous, vid)
        _drop_older_builds(h, vid, keep={build, before})
    return Switched(str(at), vid, previous, str(tree), _tell_runner(h, at))


def _drop_older_builds(h: Path, vid: str, keep: set[str | None]) -> None:
    """Other builds of `vid` than the current and the previous one: nothing points at them any more."""
    for p in (h / "versions").glob(f"{vid}@*"):
        if p.name not in keep and not p.is_symlink() and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _record(h: Path, previous: str | None, vid: str) -> None:
    path = h / "history.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = []
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": previous, "to": vid})
    atomic_write_json(path, history[-100:])


def _runner_pid(h: Path, at: Path) -> int | None:
    """The pid of the `comfyver run --at PATH` running now: one holds run.lock (a flock, gone with its process,
    so a run.pid left on a volume by a dead pod names nobody), and its command line names PATH."""
    try:
        fd = os.open(h / "run.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: no runner
        except BlockingIOError:
            pass
        pid = int((h / "run.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    named = {os.fsencode(a) for a in (str(at), os.path.abspath(at))}
    return pid if "--at" in [a.decode(errors="replace") for a in argv] and named & set(argv) else None


def _tell_runner(h: Path, at: Path) -> int | None:
    pid = _runner_pid(h, at)
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


class _Stop(Exception):
    """SIGTERM to the supervisor: stop ComfyUI and exit."""


def run_at(root: Path, at: Path, comfy_args: list[str]) -> int:
    """Run ComfyUI from the version PATH points at until it exits on its own or this process is interrupted
    (Ctrl-C, SIGTERM: ComfyUI is stopped first, never left behind); on SIGHUP (sent by `comfyver switch`) stop it and
    start it again on the version PATH points at now. One runner per PATH (run.lock)."""
    at = _at(at)
    h = home(at)
    if _target(at) is None:
        raise ComfyverError(f"--at {at}: no version there yet", hint=f"`comfyver switch <id> --at {at}` first")
    h.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(h / "run.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise ComfyverError(f"--at {at}: a `comfyver run --at` already runs ComfyUI there (pid "
                            f"{_pid_text(h)})", hint="stop it first, or `comfyver switch <id> --at` to change its "
                                                     "version") from None
    state = Path(os.environ.get("COMFYVER_STATE_DIR") or h / "state")  # one state for every version run here
    restart = [False]

    def on_term(*_: object) -> None:
        raise _Stop

    old_hup = signal.signal(signal.SIGHUP, lambda *_: restart.__setitem__(0, True))
    old_term = signal.signal(signal.SIGTERM, on_term)
    proc: subprocess.Popen | None = None
    try:
        atomic_write_text(h / "run.pid", f"{os.getpid()}\n")
        while True:
            restart[0] = False  # before PATH is read: a switch from now on is seen
            target = _target(at)
            if target is None:
                raise ComfyverError(f"--at {at}: the link is gone", hint=f"`comfyver switch <id> --at {at}`")
            # the build's own folder: a later switch moves the link, never files under a running ComfyUI
            proc = localrun.start(root, target.partition("@")[0], h / "versions" / target, comfy_args, state)
            while proc.poll() is None and not restart[0]:
                time.sleep(0.1)
            if not restart[0]:
                return proc.returncode
            _stop(proc)
            proc = None
    except (KeyboardInterrupt, _Stop):
        return _stop(proc) if proc is not None else 130
    finally:
        if proc is not None and proc.poll() is None:  # whatever ended this process: ComfyUI does not outlive it
            proc.kill()
            proc.wait()
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGTERM, old_term)
        with contextlib.suppress(OSError, ValueError):
            if int((h / "run.pid").read_text()) == os.getpid():
                (h / "run.pid").unlink()
        os.close(lock_fd)


def _pid_text(h: Path) -> str:
    try:
        return (h / "run.pid").read_text().strip()
    except OSError:
        return "unknown"


def _stop(proc: subprocess.Popen) -> int:
    """SIGINT, then SIGKILL after RESTART_WAIT seconds; a second Ctrl-C or SIGTERM meanwhile kills it at once."""
    try:
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=RESTART_WAIT)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, _Stop):
        proc.kill()
        return proc.wait()
