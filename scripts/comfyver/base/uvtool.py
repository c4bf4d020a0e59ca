"""The `uv` binary comfyver runs (the one shipped by the `uv` package, a dependency, found with its own API), and the
one way comfyver makes a Python environment from a locked project: `uv venv` + `uv sync --frozen`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from comfyver.base import web
from comfyver.base.errors import ComfyverError


def uv_bin() -> str:
    """Path of the uv executable installed with comfyver (`uv.find_uv_bin()`), not whatever `uv` is on PATH."""
    try:
        import uv
        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise ComfyverError(f"the `uv` package comfyver depends on is missing or broken ({exc})",
                            hint="reinstall comfyver: pip install -e . (it installs uv)") from None


def choose_python(requires: str, what: str) -> str:
    """This interpreter if it satisfies `requires` (python.requires), else the requirement for uv to find."""
    try:
        if platform.python_version() in SpecifierSet(requires):
            return sys.executable
    except InvalidSpecifier:
        raise ComfyverError(f"{what}: python.requires {requires!r} is not a version specifier") from None
    return requires


def uv_env(venv: Path | None = None) -> dict[str, str]:
    """The environment uv runs with: the caller's (UV_* settings pass through), never its VIRTUAL_ENV; `venv` the
    environment `uv sync` fills."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    if venv is not None:
        env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    return env


def run_uv(args: list[str], what: str, env: dict[str, str]) -> None:
    p = subprocess.run([uv_bin(), *args], env=env, capture_output=True, text=True)
    if p.returncode:
        tail = "\n".join(web.redact(p.stderr).strip().splitlines()[-8:])
        raise ComfyverError(f"{what}: uv {args[0]} failed:\n{tail}",
                            hint="offline installs need `comfyver fetch <id>` first" if "--offline" in args else None)


def make_venv(venv: Path, python: str, what: str, *, system_site_packages: bool = False) -> None:
    """`uv venv --relocatable` at `venv` (it may be renamed afterwards)."""
    args = ["venv", "--quiet", "--relocatable", "--python", python]
    run_uv([*args, *(["--system-site-packages"] if system_site_packages else []), str(venv)], what, uv_env())


def sync(project: Path, venv: Path, what: str, *, offline: bool = False, uv_args: Sequence[str] = ()) -> None:
    """`uv sync --frozen --no-install-project` of `project`'s pyproject.toml + uv.lock into `venv` (uv checks every
    wheel's hash; wheels come from uv's cache)."""
    args = ["sync", "--quiet", "--frozen", "--no-install-project", "--project", str(project)]
    run_uv(args + (["--offline"] if offline else []) + list(uv_args), what, uv_env(venv))
