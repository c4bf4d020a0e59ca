"""The content-addressed model store shared by every version: `<store>/sha256/<hex>`.

A blob's name is the sha256 of its bytes, so one file serves every version and
model path that locks it. Blobs arrive through `download.download` (`*.part`,
Range resume, retries, verify, rename) under a per-blob file lock: several
processes sharing one store (workers on one network volume) download each
model once, and nobody ever sees a partial blob. A blob whose bytes no longer
match its name is dropped and fetched again. Nothing in the store is followed through a link: a link
where a blob belongs is not a blob; it is removed (the link, never what it points at) and the blob fetched.

Re-hashing multi-GB files on every check would be slow, so `StatCache` keeps
(size, mtime, inode, device) -> sha256 for files already hashed; a file whose
stat is unchanged is not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError
from comfyver.base.fsutil import atomic_write_json
from comfyver.base.lockfile import Lock, ModelLocked
from comfyver.sources import download
from comfyver.sources.partfile import hash_file, open_part

Progress = Callable[[int], None]


def default_store() -> Path:
    """`$COMFYVER_MODELS`, else `<cache>/models`."""
    env = os.environ.get("COMFYVER_MODELS")
    return Path(env) if env else project.cache_dir() / "models"


def blob_path(store: Path, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ComfyverError(f"{sha256!r} is not a sha256 hex digest")
    return Path(store) / "sha256" / sha256


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


class StatCache:
    """path -> (size, mtime_ns, inode, device, sha256) in `<cache>/statcache.json` (file-locked).

    `rehash=True`: answer only from hashes computed by this run (every byte is read again once; a file
    corrupted in place with size, mtime and inode unchanged is found); what it hashes is still recorded."""

    def __init__(self, path: Path | None = None, *, rehash: bool = False):
        self.path = Path(path) if path else project.cache_dir() / "statcache.json"
        self.rehash = rehash
        # path -> [size, mtime_ns, inode, device, sha256] as read from the JSON file
        self._data: dict[str, list[Any]] | None = None
        self._dirty: dict[str, list[Any] | None] = {}

    def _load(self) -> dict[str, list[Any]]:
        if self._data is None:
            try:
                self._data = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                self._data = {}
        return self._data

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        entry = self._dirty.get(str(path)) if self.rehash else self._load().get(str(path))
        return entry[4] if entry and entry[:4] == _stat_key(st) else None

    def remember(self, path: Path, st: os.stat_result, sha256: str) -> None:
        entry = _stat_key(st) + [sha256]
        self._load()[str(path)] = entry
        self._dirty[str(path)] = entry

    def forget(self, path: Path) -> None:
        self._load().pop(str(path), None)
        self._dirty[str(path)] = None

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            try:
                on_disk = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                on_disk = {}
            for k, v in self._dirty.items():
                if v is None:
                    on_disk.pop(k, None)
                else:
                    on_disk[k] = v
            atomic_write_json(self.path, on_disk)
        self._dirty.clear()


def file_sha256(path: Path, cache: StatCache | None = None, progress: Progress | None = None) -> str:
    """sha256 hex of `path` (symlinks followed); unchanged files come from the stat cache."""
    real = Path(os.path.realpath(path))
    st = real.stat()
    if cache is not None and (hit := cache.lookup(real, st)):
        return hit
    digest = _sha256_overlapped(real, progress)
    if cache is not None and _stat_key(real.stat()) == _stat_key(st):
        cache.remember(real, st, digest)
    return digest


def _sha256_overlapped(path: Path, progress: Progress | None = None, block: int = 4 << 20) -> str:
    """sha256 of a file, reading the next block in a thread while this one is hashed.

    Both `read` and `sha256.update` release the GIL, so on a slow volume the
    time is about max(read, hash) instead of their sum."""
    h = hashlib.sha256()
    blocks: queue.Queue[bytes | OSError | None] = queue.Queue(maxsize=4)

    stop = threading.Event()

    def put(item: bytes | OSError | None) -> None:
        while not stop.is_set():
            try:
                return blocks.put(item, timeout=0.1)
            except queue.Full:
                pass

    def reader() -> None:
        try:
            with open(path, "rb", buffering=0) as f:
                while not stop.is_set() and (chunk := f.read(block)):
                    put(chunk)
            put(None)
        except OSError as exc:
            put(exc)

    threading.Thread(target=reader, daemon=True, name="sha256-reader").start()
    try:
        while (chunk := blocks.get()) is not None:
            if isinstance(chunk, OSError):
                raise chunk
            h.update(chunk)
            if progress:
                progress(len(chunk))
    finally:
        stop.set()  # the reader ends even if hashing was interrupted
    return h.hexdigest()


def check_file(path: Path, sha256: str, size: int, cache: StatCache | None = None,
               progress: Progress | None = None) -> str | None:
    """None if `path` holds exactly the locked bytes, else what is wrong."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    if st.st_size != size:
        return f"size {st.st_size}, locked {size}"
    got = file_sha256(path, cache, progress)
    return None if got == sha256 else f"sha256 {got}"


def check_blob(blob: Path, sha256: str, size: int, cache: StatCache | None = None) -> str | None:
    """`check_file` for a blob in the store, where a link is never followed."""
    if blob.is_symlink():
        return "a link, not a stored file"
    return check_file(blob, sha256, size, cache)


def ensure(store: Path, key: str, locked: ModelLocked, *, offline: bool = False, cache: StatCache | None = None,
           progress: Progress | None = None, seed: Path | None = None, untrusted: bool = False) -> Path:
    """The verified blob for model `key` (locked {url, sha256, size}) in `store`; fetch it if needed.

    `seed`: a local file that may already hold the bytes (copied, verified, if it does). `untrusted`: the
    source was read from a workflow (`lockfile.from_workflow`): fetched inside `web.untrusted_fetches()`."""
    sha, size = locked["sha256"], locked["size"]
    blob = blob_path(store, sha)
    what = f"model {key}"
    if check_blob(blob, sha, size, cache) is None:
        _mark_used(blob, sha, cache)
        return blob
    blob.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(blob) + ".lock"):
        problem = check_blob(blob, sha, size, cache)  # another process may have fetched it meanwhile
        if problem is None:
            _mark_used(blob, sha, cache)
            return blob
        if blob.is_symlink():
            blob.unlink()
        elif problem != "missing":
            if cache:
                cache.forget(blob)
            if _sha256_overlapped(blob) == sha:  # the blob is right by its name: the lock is what is wrong
                raise ComfyverError(f"{what}: the lock says {size} bytes, but the stored blob whose bytes hash to "
                                    f"the locked sha256 {sha} has {blob.stat().st_size}; the lock's size is wrong",
                                    hint="fix models[...].locked.size in version.json, or re-lock the model with "
                                         "`comfyver update`; the shared blob was left as it is")
            blob.unlink()  # wrong bytes under this name: drop, fetch again
        if seed is not None and check_file(seed, sha, size, cache) is None:
            _copy_verified(seed, blob, sha, what)
        elif offline:
            raise ComfyverError(f"{what}: not in the model store {store} and --offline was given",
                                hint="run `comfyver fetch <id>` (or `comfyver models sync <id>`) while online first")
        else:
            with web.untrusted_fetches() if untrusted else nullcontext():
                download.download(locked["url"], blob, sha256=sha, size=size, what=what, progress=progress)
        _read_only(blob)
        if cache:
            cache.remember(blob, blob.stat(), sha)
    return blob


def adopt(store: Path, src: Path, sha256: str) -> Path:
    """Move `src`, whose sha256 the caller just computed while writing it, into the store as its blob."""
    blob = blob_path(store, sha256)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(blob) + ".lock"):
        if blob.exists() and not blob.is_symlink():
            os.unlink(src)  # already stored (the bytes are the same by name)
            _mark_used(blob, sha256, None)
        else:
            os.replace(src, blob)  # a link there is replaced, never followed
            _read_only(blob)
    return blob


def _mark_used(blob: Path, sha256: str, cache: StatCache | None) -> None:
    """A blob used now is young again for `gc --blobs --min-age` (the version.json of a running lock that uses it
    may not be written yet); the stat cache follows, so it is not hashed again for that."""
    try:
        os.utime(blob, follow_symlinks=False)
    except OSError:  # another user's blob in a shared store: leave its time
        return
    if cache:
        cache.remember(blob, blob.lstat(), sha256)


def _read_only(blob: Path) -> None:
    """chmod 444 the blob itself: a link put in its place meanwhile is not followed (the open fails)."""
    fd = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)


def _copy_verified(src: Path, blob: Path, sha: str, what: str) -> None:
    part = blob.with_name(blob.name + ".part")
    part.unlink(missing_ok=True)  # a link there is removed, never written through
    with open(src, "rb") as fi, open_part(part, "wb") as fo:
        shutil.copyfileobj(fi, fo, 4 << 20)
    got = hash_file(part).hexdigest()
    if got != sha:
        part.unlink()
        raise ComfyverError(f"{what}: {src} changed while it was copied (sha256 {got}, locked {sha})")
    os.replace(part, blob)



def seed_candidate(source: Path, key: str, sha256: str) -> Path | None:
    """A file in `source` that may hold model `key`: `<source>/<key>` (a ComfyUI models folder) or
    `<source>/sha256/<hex>` (another store)."""
    for p in (Path(source) / key, blob_path(source, sha256)):
        if p.is_file():
            return p
    return None


def sync(lock: Lock, store: Path, *, source: Path | None = None, offline: bool = False, rehash: bool = False,
         progress_for: Callable[[str, int], AbstractContextManager[Progress | None]] | None = None) -> dict[str, str]:
    """Put every model of `lock` into `store`; return key -> present | copied | downloaded.

    `progress_for(key, size)` gives a context manager yielding a byte-count callback (or None);
    `rehash`: hash every blob again instead of trusting the stat cache."""
    cache = StatCache(rehash=rehash)
    done: dict[str, str] = {}
    try:
        for key, m in sorted(lock["models"].items()):
            locked = m["locked"]
            blob = blob_path(store, locked["sha256"])
            if check_blob(blob, locked["sha256"], locked["size"], cache) is None:
                done[key] = "present"
                continue
            seed = seed_candidate(source, key, locked["sha256"]) if source else None
            if seed is not None and check_file(seed, locked["sha256"], locked["size"], cache) is not None:
                seed = None  # a file by that name with other bytes: not used
            with progress_for(key, locked["size"]) if progress_for else nullcontext() as progress:
                ensure(store, key, locked, offline=offline, cache=cache, progress=progress, seed=seed,
                       untrusted=lockfile.from_workflow(m))
            done[key] = "copied" if seed is not None else "downloaded"
    finally:
        cache.save()
    return done
