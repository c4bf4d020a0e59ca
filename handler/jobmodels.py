"""Per-job models by URL (the job input `models`): each downloaded once into a content-addressed store, verified
by its sha256, kept under a size bound (least recently used evicted first) and shown to ComfyUI for that job only.

The store (COMFY_JOB_MODELS_DIR; default on the network volume when one is mounted, else in the state folder):

    <store>/sha256/<hex>     one file per model, named by its sha256; its mtime is its last use
    <store>/tmp/<...>.part   downloads in progress (hashed as they arrive; renamed into sha256/ once verified)
    <store>/.lock            the store's file lock: taken to look a model up, to evict and to add one

A job using a model holds a shared `flock` on that model's file until it ends; eviction takes only files it can
lock exclusively, so a file a running job uses (in this worker or another one on the same volume) is never
removed. Bad bytes never enter sha256/: a download whose digest differs is deleted where it lies, in tmp/.

What ComfyUI sees: the worker starts ComfyUI with a second extra model paths file that adds
<state>/job-models-active/<folder> to each model folder. A job's models are symbolic links there named
`job-<token>-<name>` (a random token per job), and the job's workflow is pointed at them: an input that chooses
from a list (LoraLoader's `lora_name`, ...) whose value is a model's `name` gets the link's name. The links are
removed when the job ends. Files only, never a folder: ComfyUI's file list cache fails on a folder it listed
that is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from handler.errors import JobError, bad_input
from handler.fetch import fetch_url, safe_name
from handler.settings import MODEL_FOLDERS, Settings

log = logging.getLogger("handler")

FIELDS = ("folder", "name", "url", "sha256")
MAX_MODELS = 32
HEX64 = re.compile(r"[0-9a-f]{64}")
VOLUME = Path("/runpod-volume")  # where RunPod mounts an endpoint's network volume
ACTIVE = "job-models-active"  # <state>/<ACTIVE>/<folder>/: the links ComfyUI sees
LINK = re.compile(r"job-[0-9a-f]{16}-")  # the prefix of a job's link names
STALE_PART = 6 * 3600  # seconds after which a download in tmp/ is taken for one a dead worker left
EXAMPLE = ('[{"folder": "loras", "name": "style.safetensors", "url": "https://.../style.safetensors", '
           '"sha256": "<64 hex digits>"}]')


@dataclass(frozen=True)
class Wanted:
    """One entry of the job's `models`, checked."""
    where: str  # models[i], for messages
    folder: str
    name: str
    url: str
    sha256: str


def parse(value, settings: Settings) -> list[Wanted]:
    """The job's `models`, every field checked before anything is downloaded; [] when absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_input("models: expected a list of {folder, name, url, sha256}", EXAMPLE)
    if value and settings.comfy_url:
        raise bad_input("models: per-job models need a ComfyUI this worker starts; this worker is attached to one "
                        "at COMFY_URL", "put the models in that ComfyUI's model folders, or unset COMFY_URL")
    if len(value) > MAX_MODELS:
        raise bad_input(f"models: {len(value)} models; at most {MAX_MODELS} per job")
    out: list[Wanted] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(value):
        where = f"models[{i}]"
        if not isinstance(item, dict):
            raise bad_input(f"{where}: expected an object with folder, name, url and sha256", EXAMPLE)
        unknown = sorted(set(item) - set(FIELDS))
        if unknown:
            raise bad_input(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}",
                            f"allowed fields: {', '.join(FIELDS)}")
        missing = [f for f in FIELDS if f not in item]
        if missing:
            raise bad_input(f"{where}.{missing[0]}: missing", "every model needs folder, name, url and sha256 "
                            "(the sha256 the file must have: `sha256sum <file>`)")
        folder = item["folder"]
        if not isinstance(folder, str) or folder not in MODEL_FOLDERS:
            raise bad_input(f"{where}.folder: {str(folder)[:80]!r} is not one of ComfyUI's model folders",
                            f"use one of {', '.join(MODEL_FOLDERS)}")
        name = safe_name(item["name"], f"{where}.name")
        url = item["url"]
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_input(f"{where}.url: expected an http:// or https:// URL", "give the file's download URL")
        digest = item["sha256"]
        if not isinstance(digest, str) or not HEX64.fullmatch(digest.strip().lower()):
            raise bad_input(f"{where}.sha256: expected the file's sha256 as 64 hex digits, got {str(digest)[:80]!r}",
                            "`sha256sum <file>` prints it; Hugging Face shows it as the file's SHA256")
        if (folder, name) in seen:
            raise bad_input(f"{where}: {folder}/{name} is given twice", "give each model once")
        seen.add((folder, name))
        out.append(Wanted(where, folder, name, url, digest.strip().lower()))
    return out


def store_dir(settings: Settings) -> Path:
    """COMFY_JOB_MODELS_DIR, else on the network volume when one is mounted, else in the state folder."""
    if settings.job_models_dir is not None:
        return settings.job_models_dir
    if VOLUME.is_dir():
        return VOLUME / "comfyver" / "job-models"
    return settings.state_dir / "job-models"


def max_bytes(settings: Settings) -> int:
    return max(0, int(settings.job_models_max_gb * 1e9))


def active_dir(settings: Settings) -> Path:
    return settings.state_dir / ACTIVE


_cleared: set[Path] = set()


def comfy_args(settings: Settings) -> list[str]:
    """The `--extra-model-paths-config` that shows ComfyUI the per-job folders (written into the state folder,
    rewritten on each start). The first start in a process removes links a dead worker left there."""
    active = active_dir(settings)
    for folder in MODEL_FOLDERS:
        (active / folder).mkdir(parents=True, exist_ok=True)  # never removed (ComfyUI's list cache)
    if active not in _cleared:
        _cleared.add(active)
        for folder in MODEL_FOLDERS:
            for p in (active / folder).iterdir():
                if LINK.match(p.name) and p.is_symlink():
                    p.unlink(missing_ok=True)
    lines = ["comfyver_job_models:", f"  base_path: {str(active)!r}"] + [f"  {f}: {f}" for f in MODEL_FOLDERS]
    path = active / "extra_model_paths.yaml"  # beside the folders, not among them: never listed as a model
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return ["--extra-model-paths-config", str(path)]


class JobView:
    """One job's models as ComfyUI sees them: links in the per-job folders, their files pinned (a shared flock)
    until close(). Filled from a download thread, closed by the job: an entry added after close() is undone."""

    def __init__(self, settings: Settings):
        self.active = active_dir(settings)
        self.token = uuid.uuid4().hex[:16]
        self.shown: dict[str, str] = {}  # the job's name -> the name ComfyUI lists
        self._links: list[Path] = []
        self._pins: list[int] = []
        self._lock = threading.Lock()
        self.closed = False

    def add(self, want: Wanted, blob: Path, pin: int) -> None:
        shown = f"job-{self.token}-{want.name}"
        link = self.active / want.folder / shown
        with self._lock:
            if self.closed:
                os.close(pin)
                return
            self._pins.append(pin)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            os.symlink(blob, link)
            self._links.append(link)
            self.shown[want.name] = shown

    def point(self, prompt: dict, object_info: dict) -> None:
        """Inputs that choose from a list and name one of the job's models now name its link."""
        if not self.shown:
            return
        for node in prompt.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            info = object_info.get(node.get("class_type")) if isinstance(inputs, dict) else None
            if not isinstance(info, dict) or not isinstance(info.get("input"), dict):
                continue
            assert isinstance(inputs, dict)
            for section in ("required", "optional"):
                specs = info["input"].get(section)
                for k, spec in (specs.items() if isinstance(specs, dict) else ()):
                    v = inputs.get(k)
                    if isinstance(v, str) and v in self.shown and _is_choice(spec):
                        inputs[k] = self.shown[v]

    def close(self) -> None:
        with self._lock:
            self.closed = True
            links, pins = self._links, self._pins
            self._links, self._pins = [], []
        for link in links:
            with contextlib.suppress(OSError):
                os.utime(os.readlink(link), ns=_now_ns())  # its last use, for eviction
            link.unlink(missing_ok=True)
        for fd in pins:
            os.close(fd)


def _open_blob(path: Path) -> int | None:
    """The stored model at `path`, opened for reading; None when there is none. Anything but a regular file under
    that name (a link, a folder, a FIFO: never written by the store) is removed as a stray entry, never followed,
    linked for a job or waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symbolic link
        _remove_stray(path)
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    _remove_stray(path)
    return None


def _remove_stray(path: Path) -> None:
    log.warning("per-job model store: removing %s, which is not a regular file", path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _now_ns() -> tuple[int, int]:
    """Now, to the nanosecond (a bare utime takes the kernel's coarse clock: two uses a few ms apart tie)."""
    t = time.time_ns()
    return t, t


def _is_choice(spec) -> bool:
    t = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return isinstance(t, list) or t == "COMBO"


class Store:
    """The content-addressed store: sha256/<hex> files, at most `limit` bytes in all."""

    def __init__(self, root: Path, limit: int):
        self.root, self.limit = root, limit
        self.blobs, self.tmp = root / "sha256", root / "tmp"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def pin(self, digest: str) -> int | None:
        """Hold the model `digest` for a job (under locked()): an open file with a shared flock, its last use now;
        None when the store does not have it."""
        fd = _open_blob(self.blobs / digest)
        if fd is None:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.utime(fd, ns=_now_ns())
        return fd

    def files(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of every stored model, least recently used first."""
        out = []
        for p in self.blobs.iterdir():
            if HEX64.fullmatch(p.name):
                with contextlib.suppress(FileNotFoundError):
                    st = p.lstat()
                    if stat.S_ISREG(st.st_mode):
                        out.append((st.st_mtime, st.st_size, p))
                    else:
                        _remove_stray(p)
        return sorted(out)

    def make_room(self, size: int) -> None:
        """Evict least recently used models (under locked()) until `size` more bytes fit under the bound; a model
        a running job holds is skipped. A JobError when they do not fit even so."""
        now = time.time()
        for p in self.tmp.iterdir():  # downloads a dead worker left
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime > STALE_PART:
                    p.unlink()
        files = self.files()
        total = sum(s for _, s, _ in files)
        for _, s, p in files:
            if total + size <= self.limit:
                break
            fd = _open_blob(p)
            if fd is None:  # gone, or a stray entry (removed)
                total -= s
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running job uses it
            finally:
                os.close(fd)  # the lock goes with it; nobody can pin it meanwhile: we hold the store lock
            p.unlink(missing_ok=True)
            total -= s
        if total + size > self.limit:
            raise JobError("input", f"the per-job model store has no room for {size} more bytes: it holds {total} of "
                           f"COMFY_JOB_MODELS_MAX_GB={self.limit / 1e9:g} GB, in models running jobs use",
                           hint="send fewer or smaller models, or raise COMFY_JOB_MODELS_MAX_GB")

    def fetch(self, want: Wanted, settings: Settings, deadline: float | None, stop: threading.Event | None) -> int:
        """The model `want`, pinned (a file descriptor, see pin()): from the store, else downloaded into tmp/
        (hashing as it arrives), verified, then renamed into sha256/ after making room."""
        with self.locked():
            pin = self.pin(want.sha256)
        if pin is not None:
            return pin
        what = f"{want.where} ({want.folder}/{want.name})"
        part = self.tmp / f"{want.sha256}.{uuid.uuid4().hex}.part"
        h = hashlib.sha256()
        try:
            with open(part, "xb") as fh:
                def sink(chunk: bytes) -> None:
                    h.update(chunk)
                    fh.write(chunk)
                fetch_url(want.url, f"{want.where}.url", settings.allowed_fetch_hosts, self.limit, deadline=deadline,
                          stop=stop, sink=sink, too_large_hint="a per-job model must fit in the store: raise "
                          "COMFY_JOB_MODELS_MAX_GB, or ship the model with the version")
            got = h.hexdigest()
            if got != want.sha256:
                raise bad_input(f"{what}: the downloaded file's sha256 is {got}, the job expects {want.sha256}; "
                                "it was not stored", "check the URL and the sha256 (`sha256sum <file>`)",
                                model=want.name, expected_sha256=want.sha256, actual_sha256=got)
            size = part.stat().st_size
            with self.locked():
                pin = self.pin(want.sha256)  # another job stored it meanwhile: keep that one
                if pin is None:
                    self.make_room(size)
                    os.replace(part, self.blobs / want.sha256)
                    pin = self.pin(want.sha256)
                    assert pin is not None  # we hold the store lock: nothing evicts it meanwhile
            return pin
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise JobError("disk_full" if full else "storage", f"{what}: cannot write the model into the per-job "
                           f"model store: {exc.strerror}", hint="free space on the volume, or lower "
                           "COMFY_JOB_MODELS_MAX_GB" if full else "check COMFY_JOB_MODELS_DIR") from None
        finally:
            part.unlink(missing_ok=True)


def provide(view: JobView, wanted: list[Wanted], settings: Settings, deadline: float | None = None,
            stop: threading.Event | None = None) -> None:
    """Fetch (or find) each wanted model and add it to the job's view (run in a thread: downloads block)."""
    store = Store(store_dir(settings), max_bytes(settings))
    for want in wanted:
        view.add(want, store.blobs / want.sha256, store.fetch(want, settings, deadline, stop))
