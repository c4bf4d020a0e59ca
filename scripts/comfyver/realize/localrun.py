"""Start a realized ComfyUI (`comfyver run <id>` without Nix).

The install folder stays as realized: input/, output/, temp/, user/ and the database live in
a state folder outside it (`$COMFYVER_STATE_DIR`, else `<cache>/state/<id>`),
and Python's bytecode goes to `<state>/pycache` (PYTHONPYCACHEPREFIX), so a
later `comfyver verify --deep` still matches the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from comfyver.base import lockfile, project
from comfyver.base.errors import ComfyverError
from comfyver.realize import comfystate, realize

UP_TO_DATE_KEYS = ("id", "lock", "uvLock", "pyproject")


def state_dir(vid: str) -> Path:
    env = os.environ.get("COMFYVER_STATE_DIR")
    return Path(env) if env else project.cache_dir() / "state" / lockfile.check_version_id(vid)


def check_realized(root: Path, vid: str, into: Path) -> None:
    """Refuse to start a folder that is missing or realized from another state of the lock."""
    lock = lockfile.read(project.lock_path(root, vid))
    have = realize.read_marker(into)
    hint = f"run `comfyver realize {vid}" + (f" --into {into}`" if into != realize.default_into(vid) else "`")
    if have is None:
        raise ComfyverError(f"version {vid}: {into} is not a realized version", hint=hint)
    want = realize.stamp(root, vid, lock, Path("."))
    stale = [k for k in UP_TO_DATE_KEYS if have.get(k) != want.get(k)]
    if stale:
        raise ComfyverError(f"version {vid}: {into} was realized from an older lock ({', '.join(stale)} changed)", hint=hint)


def command(vid: str, into: Path, comfy_args: list[str], state: Path | None = None) -> tuple[list[str], dict, Path]:
    """argv, environment and working folder for ComfyUI in `into` (its state in `state`, else state_dir(vid))."""
    state = comfystate.prepare(state or state_dir(vid), into)
    (state / "pycache").mkdir(exist_ok=True)
    venv = into / realize.VENV
    argv = [str(venv / "bin" / "python"), "main.py", *comfystate.state_args(state, comfy_args), *comfy_args]
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           **comfystate.bytecode_env(state / "pycache")}
    env.pop("PYTHONHOME", None)
    return argv, env, into


def start(root: Path, vid: str, into: Path | None, comfy_args: list[str], state: Path | None = None,
          **popen_kw) -> subprocess.Popen:
    into = Path(into or realize.default_into(vid)).absolute()
    check_realized(root, vid, into)
    argv, env, cwd = command(vid, into, comfy_args, state)
    return subprocess.Popen(argv, cwd=cwd, env=env, **popen_kw)


def run_local(root: Path, vid: str, into: Path | None, comfy_args: list[str]) -> int:
    """Run ComfyUI from a realized folder until it exits; return its exit code."""
    proc = start(root, vid, into, comfy_args)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
