"""Where a running ComfyUI writes: every file it creates lives in a state folder, never in its install tree.

Used by the handler, `comfyver run` and (mirrored in shell) the Nix wrapper, so a realized or
Nix-built tree is never written by running it and `comfyver verify --deep` still matches the lock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

# flag -> sub-folder of the state folder ("" = the folder itself: ComfyUI adds "temp" to --temp-directory)
DIR_FLAGS = {"--input-directory": "input", "--output-directory": "output", "--temp-directory": "",
             "--user-directory": "user"}
DATABASE_FLAG = "--database-url"
# The state folder's variable: the Nix launchers' and images' name (docs/nix.md: the image sets
# COMFYUI_STATE_DIR=/var/lib/comfyui), which the handler reads too, so the worker in an image writes where the
# launcher prepared. COMFY_STATE_DIR, the handler's former name (docs/handler.md), is still read when the other
# is unset: a deprecated alias.
STATE_DIR_ENV = "COMFYUI_STATE_DIR"
DEPRECATED_STATE_DIR_ENV = "COMFY_STATE_DIR"


def state_dir_from_env(env=None) -> str | None:
    """The state folder the environment names (STATE_DIR_ENV, else the deprecated alias), or None."""
    env = os.environ if env is None else env
    return env.get(STATE_DIR_ENV) or env.get(DEPRECATED_STATE_DIR_ENV) or None


def given(args: list[str], flag: str) -> str | None:
    """The value of `flag` in ComfyUI's argv (`--flag v` or `--flag=v`), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def database_url(state: Path) -> str:
    return f"sqlite:///{Path(state).absolute() / 'user' / 'comfyui.db'}"


def state_args(state: Path, args: Sequence[str] = ()) -> list[str]:
    """ComfyUI flags putting input, output, temp, user and the database in `state`; flags already in `args` win."""
    state = Path(state).absolute()
    out: list[str] = []
    for flag, sub in DIR_FLAGS.items():
        if given(list(args), flag) is None:
            out += [flag, str(state / sub) if sub else str(state)]
    if given(list(args), DATABASE_FLAG) is None:
        out += [DATABASE_FLAG, database_url(state)]
    return out


def prepare(state: Path, home: Path | None = None, input_dir: Path | None = None) -> Path:
    """Create the state folders; seed the input folder (default `state/input`) with the files the install
    tree ships (ComfyUI's example.png), never overwriting what is there."""
    state = Path(state)
    for sub in ("input", "output", "temp", "user"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    input_dir = Path(input_dir or state / "input")
    input_dir.mkdir(parents=True, exist_ok=True)
    shipped = Path(home) / "input" if home else None
    if shipped and shipped.is_dir() and shipped.resolve() != input_dir.resolve():
        for f in shipped.iterdir():
            dest = input_dir / f.name
            if f.is_file() and not dest.exists():
                shutil.copyfile(f, dest)
    return state


def bytecode_env(prefix: Path) -> dict[str, str]:
    """Where Python may write ComfyUI's bytecode: `prefix` (outside the tree), unless the environment
    already says (PYTHONPYCACHEPREFIX) or writes none (PYTHONDONTWRITEBYTECODE): then a prefix would only
    hide the installed packages' own bytecode and make every start recompile them (seconds)."""
    if os.environ.get("PYTHONPYCACHEPREFIX") or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return {}
    return {"PYTHONPYCACHEPREFIX": str(prefix)}
