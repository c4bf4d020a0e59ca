"""Safe unpacking of node archives (Comfy Registry zips), fetchzip-style.

Every entry is checked before anything is written: absolute paths, `..`
components, drive letters, and symlinks whose target leaves the tree are
refused with the archive and entry named. `strip_root` drops a single
top-level folder the way `pkgs.fetchzip { stripRoot = true; }` does.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from comfyver.errors import ComfyverError


def _check_name(name: str, what: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in p.parts or "\0" in name):
        raise ComfyverError(f"{what}: archive entry {name!r} escapes the target folder (refused)")
    return p


def _link_target_ok(entry: PurePosixPath, target: str) -> bool:
    if target.startswith("/"):
        return False
    depth = len(entry.parts) - 1
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def has_single_root(names: list[str]) -> bool:
    tops = {n.replace("\\", "/").split("/", 1)[0] for n in names if n.strip("/")}
    return len(tops) == 1 and any("/" in n.strip("/") for n in names)


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, *, strip_root: bool, what: str) -> None:
    """Unpack `zip_path` into the new folder `dest` (must not exist)."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ComfyverError(f"{what}: {zip_path} is not a valid zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        plan = []
        for info in infos:
            p = _check_name(info.filename, what)
            mode = info.external_attr >> 16
            is_link = stat.S_ISLNK(mode)
            if strip_root:
                if len(p.parts) <= 1:
                    if info.is_dir():
                        continue
                    raise ComfyverError(f"{what}: stripRoot is set but {info.filename!r} is at the archive's top level")
                p = PurePosixPath(*p.parts[1:])
            if is_link:
                target = zf.read(info).decode()
                if not _link_target_ok(p, target):
                    raise ComfyverError(f"{what}: archive entry {info.filename!r} is a link out of the tree ({target!r}), refused")
            plan.append((info, p, is_link, mode))
        dest.mkdir(parents=True)
        try:
            for info, p, is_link, mode in plan:
                out = dest.joinpath(*p.parts) if p.parts else dest
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if is_link:
                    os.symlink(zf.read(info).decode(), out)
                    continue
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                    raise ComfyverError(f"{what}: archive entry {info.filename!r} is corrupt: {exc}") from None
                if mode & stat.S_IXUSR:
                    out.chmod(0o755)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
