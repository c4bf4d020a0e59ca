"""Where things live: the project root, versions/<id>/, and the user cache."""

from __future__ import annotations

import os
from pathlib import Path

from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import check_version_id


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The project root: $COMFYVER_ROOT, else the nearest parent of `start` (cwd) with versions/."""
    env = os.environ.get("COMFYVER_ROOT")
    if env:
        return Path(env).resolve()
    cur = Path(start or os.getcwd()).resolve()
    for d in (cur, *cur.parents):
        if (d / "versions").is_dir() and ((d / "flake.nix").exists() or (d / "pyproject.toml").exists()):
            return d
    raise ComfyverError(
        f"no comfyver project found at or above {cur}",
        hint="run inside a checkout (a folder with versions/), pass --root DIR, or set COMFYVER_ROOT",
        exit_code=2,
    )


def version_dir(root: Path, vid: str) -> Path:
    return root / "versions" / check_version_id(vid)


def lock_path(root: Path, vid: str) -> Path:
    return version_dir(root, vid) / "version.json"


def version_ids(root: Path) -> list[str]:
    vdir = root / "versions"
    return sorted(p.name for p in vdir.iterdir() if (p / "version.json").is_file()) if vdir.is_dir() else []


def cache_dir() -> Path:
    """User cache: $COMFYVER_CACHE, else $XDG_CACHE_HOME/comfyver, else ~/.cache/comfyver."""
    env = os.environ.get("COMFYVER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "comfyver" if xdg else Path.home() / ".cache" / "comfyver"
