"""A custom node taken as it is on this machine's disk (`import --from-install --allow-dirty`): a pack with local
changes, untracked files or unpushed commits, or a folder that is neither a git checkout nor a registry install.

Original `{"type": "local", "path": "<absolute folder>"}`; locked as an archive of what is on disk, kept in the
comfyver cache (`<cache>/local-nodes/<sha256 of the zip>.zip`), by the NAR hash of its unpacked tree, as a
registry archive is: `{"type": "zip", "url": "file://<that zip>", "hash": ..., "stripRoot": false}`. Git's own
folders or files (`.git`), byte-code (`__pycache__`, `*.pyc`, `*.pyo`) are left out; a link, a special file, an
unreadable folder or a name an archive cannot carry unchanged is refused (`scan`, which the import runs before any
model is hashed), and each file is read as the scan saw it (never through a link: nothing outside the folder is
read). The archive exists on this machine only: `comfyver realize` here reads it,
Nix and other machines cannot (nix/sources.nix says so by name).
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from comfyver.base import project
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import LocalOriginal, ZipLocked
from comfyver.sources import archive, modelstore, registry

SKIPPED = frozenset({".git", "__pycache__"})  # git's folder (or a submodule's `.git` file) and byte-code folders
SKIPPED_SUFFIXES = (".pyc", ".pyo")
EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the archive's bytes depend on the tree only
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Entry:
    name: str               # in the archive: `a/b.py`, a folder `a/`
    path: Path | None       # the file (None: a folder)
    mode: int               # 0o755 / 0o644: NAR keeps the owner's execute bit only
    dev: int = 0
    ino: int = 0


def _shown(name: str) -> str:
    return name if name.isprintable() else ascii(name)


def scan(top: Path) -> tuple[list[Entry], list[str]]:
    """What the archive of the pack at `top` holds (sorted) and every reason it cannot be taken as it is: an
    unreadable folder, a link, a special file, a name a zip cannot carry unchanged (not UTF-8, a backslash, a drive
    letter) or two names one case-insensitive file system would make one (as unpacking refuses them)."""
    out: list[Entry] = []
    problems: list[str] = []
    folded: dict[object, str] = {}

    def unreadable(exc: OSError) -> None:
        problems.append(f"{_shown(os.path.relpath(exc.filename or str(top), top))}: cannot be read ({exc.strerror})")

    for cur, dirs, files in os.walk(top, onerror=unreadable, followlinks=False):
        here = Path(cur)
        rel = here.relative_to(top)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in sorted(dirs) + sorted(f for f in files if f not in SKIPPED):
            p = here / name
            arc = (rel / name).as_posix()
            try:
                st = os.lstat(p)
            except OSError as exc:
                problems.append(f"{_shown(arc)}: cannot be read ({exc.strerror})")
                continue
            try:
                arc.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"{_shown(arc)}: its name is not UTF-8, which a zip archive cannot carry unchanged")
                continue
            if "\\" in arc or (len(arc) > 1 and arc[1] == ":"):
                problems.append(f"{_shown(arc)}: a backslash or drive letter in its name: unpacking would change it")
                continue
            key = archive.fold(PurePosixPath(arc))
            if key in folded:
                problems.append(f"{_shown(arc)} and {_shown(folded[key])}: one name on a case-insensitive file system")
                continue
            folded[key] = arc
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{_shown(arc)}: a symbolic link (not followed; replace it with what it points to)")
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(arc + "/", None, 0o755))
            elif stat.S_ISREG(st.st_mode):
                if not name.endswith(SKIPPED_SUFFIXES):
                    out.append(Entry(arc, p, 0o755 if st.st_mode & stat.S_IXUSR else 0o644, st.st_dev, st.st_ino))
            else:
                problems.append(f"{_shown(arc)}: not a regular file (a pipe, socket or device)")
    return sorted(out, key=lambda e: e.name), problems


def _copy(e: Entry, out: IO[bytes], what: str) -> None:
    """The very file the scan saw (not through a link, same inode), whole."""
    assert e.path is not None
    try:
        fd = os.open(e.path, _OPEN)
    except OSError as exc:
        raise ComfyverError(f"{what}: {_shown(e.name)} cannot be read ({exc.strerror}): changed while it was read?") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (e.dev, e.ino):
            raise ComfyverError(f"{what}: {_shown(e.name)} changed while the pack was read: import it again")
        while chunk := f.read(1 << 20):
            out.write(chunk)


def lock(original: LocalOriginal, what: str) -> ZipLocked:
    top = Path(original["path"])
    if not top.is_absolute() or not top.is_dir() or top.is_symlink():
        raise ComfyverError(f"{what}: {original['path']!r} is not a folder on this machine",
                            hint="a local node is read where it was imported; import it again where it is")
    entries, problems = scan(top)
    if problems:
        raise ComfyverError(f"{what}: {len(problems)} thing(s) in {top} cannot be recorded as they are: "
                            + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    store = project.cache_dir() / "local-nodes"
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".local-", suffix=".zip", dir=store)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for e in entries:
                info = zipfile.ZipInfo(e.name, EPOCH)
                info.create_system = 3  # unix: the mode below is read back
                info.external_attr = ((stat.S_IFDIR if e.path is None else stat.S_IFREG) | e.mode) << 16
                if e.path is None:
                    z.writestr(info, b"")
                    continue
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w", force_zip64=True) as out:
                    _copy(e, out, what)
        # the hash of what realize unpacks (never stripped: the folder is the pack's root)
        sri, _ = registry.unpack_and_hash(tmp, what, strip=False)
        final = store / f"{modelstore.file_sha256(tmp)}.zip"
        os.replace(tmp, final)  # same bytes under the same name: a second import of an unchanged pack changes nothing
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"type": "zip", "url": final.as_uri(), "hash": sri, "stripRoot": False}
