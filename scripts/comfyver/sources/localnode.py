"""A custom node taken as it is on this machine's disk (`import --from-install --allow-dirty`): a pack with local
changes, untracked files or unpushed commits, or a folder that is neither a git checkout nor a registry install.

Original `{"type": "local", "path": "<absolute folder>"}`; locked as an archive of what is on disk, kept in the
comfyver cache (`<cache>/local-nodes/<sha256 of the zip>.zip`), by the NAR hash of its unpacked tree, as a
registry archive is: `{"type": "zip", "url": "file://<that zip>", "hash": ..., "stripRoot": false}`. Git's own
folders (`.git`), byte-code (`__pycache__`, `*.pyc`, `*.pyo`) are left out; a link or a special file is refused
(nothing outside the folder is read). The archive exists on this machine only: `comfyver realize` here reads it,
Nix and other machines cannot (nix/sources.nix says so by name).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from comfyver.base import nar, project
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import LocalOriginal, ZipLocked
from comfyver.sources import archive

SKIPPED_DIRS = frozenset({".git", "__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the archive's bytes depend on the tree only


def _entries(top: Path, what: str) -> list[tuple[str, Path | None, int]]:
    """(archive name, file or None for a folder, mode) for the tree at `top`, sorted; links and special files
    refused by name."""
    out: list[tuple[str, Path | None, int]] = []
    for cur, dirs, files in os.walk(top, followlinks=False):
        here = Path(cur)
        rel = here.relative_to(top)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(dirs) + sorted(files):
            p = here / name
            st = os.lstat(p)
            arc = (rel / name).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise ComfyverError(f"{what}: {arc} is a symbolic link: not followed, not recorded",
                                    hint="replace it with the file or folder it points to, or delete it")
            if stat.S_ISDIR(st.st_mode):
                out.append((arc + "/", None, 0o755))
            elif stat.S_ISREG(st.st_mode):
                if not name.endswith(SKIPPED_SUFFIXES):
                    out.append((arc, p, 0o755 if st.st_mode & 0o111 else 0o644))
            else:
                raise ComfyverError(f"{what}: {arc} is not a regular file (a pipe, socket or device): not recorded")
    return sorted(out)


def lock(original: LocalOriginal, what: str) -> ZipLocked:
    top = Path(original["path"])
    if not top.is_absolute() or not top.is_dir() or top.is_symlink():
        raise ComfyverError(f"{what}: {original['path']!r} is not a folder on this machine",
                            hint="a local node is read where it was imported; import it again where it is")
    store = project.cache_dir() / "local-nodes"
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".local-", suffix=".zip", dir=store)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for arc, src, mode in _entries(top, what):
                info = zipfile.ZipInfo(arc, EPOCH)
                info.create_system = 3  # unix: the mode below is read back
                info.external_attr = ((stat.S_IFDIR if src is None else stat.S_IFREG) | mode) << 16
                if src is None:
                    z.writestr(info, b"")
                    continue
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(src, "rb") as f, z.open(info, "w", force_zip64=True) as out:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        scratch = Path(tempfile.mkdtemp(prefix=".local-tree-", dir=store))
        try:  # the hash of what realize unpacks (never stripped: the folder is the pack's root)
            archive.extract_zip(tmp, scratch / "tree", strip_root=False, what=what)
            sri = nar.to_sri(nar.nar_hash(scratch / "tree"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        final = store / f"{digest.hexdigest()}.zip"
        os.replace(tmp, final)  # same bytes under the same name: a second import of an unchanged pack changes nothing
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"type": "zip", "url": final.as_uri(), "hash": sri, "stripRoot": False}
