"""`import --from-install DIR`: the install's venv read as evidence, never executed.

A `pip freeze` is not a lock: the venv only says what ran. Read from `lib/python3.*/site-packages/*.dist-info/METADATA`
(Name, Version; links inside the venv are not followed, nothing in it is run):
- torch's local version tag picks the lock's torch profile (`python.torch`, what `lock --torch` sets): `+cu128`,
  `+cu126`, `+cu124`, `+cu121`, `+cpu` name the profile of that build; no tag is PyPI's own build (`pypi`); any other
  tag (`+cu118`, `+rocm6.2`) has no profile, and the lock keeps its default (a note says so);
- the versions of the packages ComfyUI and the nodes require become uv constraints (`constraints`: the lock's
  python.constraints, uv's constraint-dependencies) so uv.lock resolves to what ran where it can, and are compared
  with what the new uv.lock resolved; each difference is reported.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import cast, get_args

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import Torch
from comfyver.lock import pylock

AUTO = (".venv", "venv")              # DIR/<name>, tried in this order when --python-env is not given
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_PROFILES: set[str] = set(get_args(Torch))


@dataclass(frozen=True)
class Venv:
    path: str
    python: str                         # `python3.11`, the site-packages folder's Python
    packages: dict[str, str]            # canonical name -> version, as the dist-info says
    torch_profile: Torch | None         # the profile torch's build names (None: none matches, or no torch)
    torch: dict[str, str]               # torch, torchvision, torchaudio -> installed version


@dataclass(frozen=True)
class Difference:
    package: str
    installed: str | None               # None: required, not in the venv
    locked: str | None                  # None: in the venv, not in uv.lock (another platform's, or dropped)


def find(root: Path, given: str | None) -> Path | None:
    """The venv: --python-env as given (resolved, as DIR is), else DIR/.venv or DIR/venv when one is a real folder
    (a link there is not followed)."""
    if given:
        path = Path(given).resolve()
        if not path.is_dir():
            raise UsageError(f"--python-env {given}: not a folder", hint="give the venv's folder (it holds lib/)")
        return path
    for name in AUTO:
        try:
            if stat.S_ISDIR(os.lstat(root / name).st_mode):
                return root / name
        except FileNotFoundError:
            continue
    return None


def _metadata(path: Path) -> tuple[str, str] | None:
    try:
        fd = os.open(path, _OPEN_FILE)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 1 << 16).decode("utf-8", errors="replace").split("\n\n", 1)[0]
    finally:
        os.close(fd)
    msg = HeaderParser().parsestr(head)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    name, version = str(canonicalize_name(name)), version.strip()
    # install content is untrusted: a name or version with control characters is shown escaped, never raw
    shown = [v if v.isprintable() else ascii(v) for v in (name, version)]
    return shown[0], shown[1]


def read(venv: Path) -> Venv:
    """The distributions installed in `venv` (the newest lib/python3.* that has a site-packages)."""
    lib = venv / "lib"
    sites = sorted((p for p in (lib.iterdir() if lib.is_dir() and not lib.is_symlink() else [])
                    if re.fullmatch(r"python3\.\d+", p.name) and not p.is_symlink()
                    and (p / "site-packages").is_dir() and not (p / "site-packages").is_symlink()),
                   key=lambda p: int(p.name.split(".")[1]))
    if not sites:
        raise ComfyverError(f"{venv}: no lib/python3.*/site-packages: not a Python venv (on Windows, Scripts/ and "
                            "Lib/ are not read)")
    site = sites[-1] / "site-packages"
    packages: dict[str, str] = {}
    for d in sorted(os.scandir(site), key=lambda e: e.name):
        if d.name.endswith(".dist-info") and d.is_dir(follow_symlinks=False):
            got = _metadata(Path(d.path) / "METADATA")
            if got:
                packages.setdefault(*got)
    torch = {n: packages[n] for n in sorted(pylock.TORCH_FAMILY) if n in packages}
    return Venv(str(venv), sites[-1].name, packages, profile(torch.get("torch")), torch)


def profile(torch_version: str | None) -> Torch | None:
    """The torch profile that builds this torch: its local tag (`2.7.1+cu126` -> cu126), none = PyPI's (`pypi`)."""
    if not torch_version:
        return None
    tag = torch_version.partition("+")[2]
    if not tag:
        return "pypi"
    return cast("Torch", tag) if tag in _PROFILES and tag != "pypi" else None


def _same(installed: str, locked: str) -> bool:
    try:
        return Version(installed) == Version(locked) or Version(installed).public == Version(locked).public
    except InvalidVersion:
        return installed == locked


def _compared(venv: Venv, required: set[str]) -> list[str]:
    """The packages the venv's versions speak for: each one ComfyUI or a node requires, and the torch family."""
    return sorted({str(canonicalize_name(p)) for p in required} | set(venv.torch))


def constraints(venv: Venv, required: set[str]) -> list[str]:
    """`<package>==<version>` for each package ComfyUI or a node requires (and the torch family) that the venv has,
    at its public version (`2.7.1+cu126` -> `2.7.1`: the profile picks the build): uv then resolves to what ran
    wherever the requirements admit it. A version that does not parse is left out."""
    out = []
    for pkg in _compared(venv, required):
        have = venv.packages.get(pkg)
        if not have:
            continue
        try:
            out.append(f"{pkg}=={Version(have).public}")
        except InvalidVersion:
            continue
    return out


def differences(venv: Venv, required: set[str], locked: dict[str, str]) -> list[Difference]:
    """Each package ComfyUI or a node requires (and the torch family) whose uv.lock version is not the one that
    ran; a local tag alone (`2.7.1+cu128` vs `2.7.1`) is no difference: the profile says the build."""
    out = []
    for pkg in _compared(venv, required):
        have, got = venv.packages.get(pkg), locked.get(pkg)
        if have is None and got is None:
            continue
        if have is None or got is None or not _same(have, got):
            out.append(Difference(pkg, have, got))
    return out
