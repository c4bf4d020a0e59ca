"""Safe unpacking of node archives (Comfy Registry zips), fetchzip-style.

Every entry is checked before anything is written, against the whole tree the
archive describes (not entry by entry): absolute paths, `..` components, drive
letters, duplicate entries, entries below a link or a file of the archive, and
links whose target, fully resolved through the archive's other links, leaves the
tree are refused with the archive and entry named. Names are compared as a case-insensitive,
Unicode-normalising file system (macOS, Windows) would see them: `Lib` and `lib/x`, or a
decomposed and a composed `é`, are the same path there. Folders and files are written
first, links last, files with O_EXCL|O_NOFOLLOW: nothing is ever written through
a link. `strip_root` drops a single top-level folder the way
`pkgs.fetchzip { stripRoot = true; }` does.
"""

from __future__ import annotations

import os
import shutil
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from comfyver.base.errors import ComfyverError

# one archive entry to write: (info, path below the target, is a link, mode bits)
PlanEntry = tuple[zipfile.ZipInfo, PurePosixPath, bool, int]


def _check_name(name: str, what: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if not name.strip("/"):
        raise ComfyverError(f"{what}: archive entry {name!r} has no name (refused)")
    if (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in p.parts or "\0" in name):
        raise ComfyverError(f"{what}: archive entry {name!r} escapes the target folder (refused)")
    return p


def fold(p: PurePosixPath) -> PurePosixPath:
    """The path as a case-insensitive, normalising file system compares it."""
    return PurePosixPath(unicodedata.normalize("NFC", str(p)).casefold())


MAX_LINK_HOPS = 40  # as Linux's ELOOP limit
MAX_LINK_TARGET = 4096  # PATH_MAX
# what zipfile raises for an entry it cannot read: corrupt, encrypted, an unsupported compression method
UNREADABLE = (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError)


def _resolves_inside(entry: PurePosixPath, links: dict[PurePosixPath, str]) -> bool:
    """Does the link `entry` resolve, following the archive's own links (`links`: path -> target), to a
    path inside the tree? A dangling target inside the tree is fine; any step above the root, an absolute
    target or a loop is not."""
    hops = 0
    links = {fold(k): v for k, v in links.items()}
    todo = list(reversed(PurePosixPath(links[fold(entry)]).parts))
    if links[fold(entry)].startswith("/"):
        return False
    cur: list[str] = list(entry.parts[:-1])
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not cur:
                return False
            cur.pop()
            continue
        cur.append(part)
        target = links.get(fold(PurePosixPath(*cur)))
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return False
            cur.pop()
            todo.extend(reversed(PurePosixPath(target).parts))
    return True


def has_single_root(names: list[str]) -> bool:
    """One top-level folder holding everything (names normalised as extraction does: `./a` is `a`)."""
    parts = [PurePosixPath(n.replace("\\", "/")).parts for n in names]
    parts = [p[1:] if p and p[0] == "/" else p for p in parts if p]
    return len({p[0] for p in parts}) == 1 and any(len(p) > 1 for p in parts)


def extract_zip(zip_path: str | os.PathLike[str], dest: str | os.PathLike[str], *, strip_root: bool, what: str) -> None:
    """Unpack `zip_path` into the new folder `dest` (must not exist)."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ComfyverError(f"{what}: {zip_path} is not a valid zip archive: {exc}") from None
    with zf:
        plan, targets = _plan(zf, strip_root, what)
        try:
            dest.mkdir(parents=True)
        except FileExistsError:
            raise ComfyverError(f"{what}: {dest} already exists; archives unpack into a new folder only") from None
        try:
            for info, p, is_link, mode in sorted(plan, key=lambda e: e[2]):  # folders and files, then links
                out = dest.joinpath(*p.parts) if p.parts else dest
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if is_link:
                    os.symlink(targets[p], out)
                    continue
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if mode & stat.S_IXUSR else 0o644)
                try:
                    with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except UNREADABLE as exc:
                    raise ComfyverError(f"{what}: archive entry {info.filename!r} is corrupt or unreadable: {exc}") from None
                if mode & stat.S_IXUSR:
                    out.chmod(0o755)
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ComfyverError(f"{what}: cannot unpack archive entry {info.filename!r}: {exc.strerror}") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _plan(zf: zipfile.ZipFile, strip_root: bool, what: str) -> tuple[list[PlanEntry], dict[PurePosixPath, str]]:
    """(info, path, is_link, mode) per entry and the links' targets, after checking the tree as a whole;
    raises on any escape."""
    plan: list[PlanEntry] = []
    kinds: dict[PurePosixPath, str] = {}
    links: dict[PurePosixPath, str] = {}
    folded_kinds: dict[PurePosixPath, str] = {}
    for info in zf.infolist():
        p = _check_name(info.filename, what)
        mode = info.external_attr >> 16
        is_link = stat.S_ISLNK(mode)
        if strip_root:
            if len(p.parts) <= 1:
                if info.is_dir():
                    continue
                raise ComfyverError(f"{what}: stripRoot is set but {info.filename!r} is at the archive's top level")
            p = PurePosixPath(*p.parts[1:])
        kind = "link" if is_link else ("dir" if info.is_dir() else "file")
        if not p.parts and kind != "dir":
            raise ComfyverError(f"{what}: archive entry {info.filename!r} names the target folder itself (refused)")
        if p in kinds and not (kind == "dir" and kinds[p] == "dir"):
            raise ComfyverError(f"{what}: archive entry {info.filename!r} appears twice (refused)")
        folded = folded_kinds.get(fold(p))
        if folded is not None and (folded != kind or kind == "link"):  # two links folding together: which wins?
            raise ComfyverError(f"{what}: archive entry {info.filename!r} is the same path as another entry on a "
                                f"case-insensitive or normalising file system ({folded} and {kind}; refused)")
        kinds[p] = kind
        folded_kinds[fold(p)] = kind
        if is_link:
            try:
                with zf.open(info) as f:
                    raw = f.read(MAX_LINK_TARGET + 1)  # a "target" is a path, not a bomb
                if len(raw) > MAX_LINK_TARGET:
                    raise ComfyverError(f"{what}: archive entry {info.filename!r} is a link with a target over "
                                        f"{MAX_LINK_TARGET} bytes (refused)")
                links[p] = raw.decode()
            except UnicodeDecodeError:
                raise ComfyverError(f"{what}: archive entry {info.filename!r} is a link with an unreadable target") from None
            except UNREADABLE as exc:
                raise ComfyverError(f"{what}: archive entry {info.filename!r} is corrupt or unreadable: {exc}") from None
        plan.append((info, p, is_link, mode))
    for info, p, _, _ in plan:
        for i in range(1, len(p.parts)):
            above = PurePosixPath(*p.parts[:i])
            if folded_kinds.get(fold(above)) in ("link", "file"):
                raise ComfyverError(f"{what}: archive entry {info.filename!r} lies below the "
                                    f"{folded_kinds[fold(above)]} {str(above)!r} of the same archive (refused)")
    for info, p, is_link, _ in plan:
        if is_link and (not links[p] or "\0" in links[p]):
            raise ComfyverError(f"{what}: archive entry {info.filename!r} is a link with an empty or invalid target")
        if is_link and (not p.parts or not _resolves_inside(p, links)):
            raise ComfyverError(f"{what}: archive entry {info.filename!r} is a link out of the tree "
                                f"({links.get(p)!r}, resolved through the archive's links), refused")
    return plan, links
