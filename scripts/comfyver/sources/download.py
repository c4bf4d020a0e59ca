"""Robust downloads: `*.part` files, HTTP Range resume, retries, sha256 verify, rename.

Sources: http(s):// (auth header for HF / Civitai from the environment),
file://, gs:// (google-cloud-storage). Nothing is renamed into place before
its size and sha256 match; a `.part` whose bytes turn out wrong is dropped.
The running sha256 always covers exactly the bytes in the `.part` file, so
a resumed download is hashed once, not re-read.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

import requests

from comfyver.base import web
from comfyver.base.errors import ComfyverError

CHUNK = 1 << 20
Progress = Callable[[int], None]  # called with the number of new bytes


def hash_file(path: str | os.PathLike, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h


def open_part(part: Path, mode: str):
    """Open a `.part` file without following a link put in its place (OSError ELOOP if one is there)."""
    return open(part, mode, opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW, 0o666))


def _fetch_http(url: str, part: Path, h, what: str, progress: Progress | None, retries: int,
                limit: int | None = None):
    """Append `url`'s bytes to `part` (resuming with Range); never more than `limit` bytes in all."""
    delay = 0.5
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        try:
            r = web.get(url, what=what, stream=True, retries=0, timeout=60, allow=(416,),
                        headers={"Range": f"bytes={have}-"} if have else None)
            with r:
                if r.status_code == 416:
                    return h  # nothing left to fetch; verification decides
                mode = "ab"
                if have and r.status_code != 206:  # Range ignored: start over
                    mode, h = "wb", hashlib.sha256()
                with open_part(part, mode) as f:
                    written = f.tell()
                    for chunk in r.iter_content(CHUNK):
                        written += len(chunk)
                        if limit is not None and written > limit:
                            f.close()
                            part.unlink()
                            raise ComfyverError(f"{what}: {web.redact(url)} sends more than the locked {limit} "
                                                "bytes; download stopped", hint="the source changed since it was "
                                                "locked; re-lock with `comfyver update`")
                        f.write(chunk)
                        h.update(chunk)
                        if progress:
                            progress(len(chunk))
            return h
        except web.TransientError:  # no connection, 429, 5xx; other HTTP errors are final
            if attempt >= retries:
                raise
        except (requests.RequestException, OSError) as exc:
            if attempt >= retries:
                raise ComfyverError(f"{what}: download of {web.redact(url)} failed: {web.redact(str(exc))}") from None
        time.sleep(delay)
        delay = min(delay * 2, 30)
    return h


def _fetch_file(url: str, part: Path, h, progress: Progress | None):
    src = Path(unquote(urlsplit(url).path))
    with open(src, "rb") as fi, open_part(part, "ab") as fo:
        fi.seek(fo.tell())
        while chunk := fi.read(CHUNK):
            fo.write(chunk)
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h


def gcs_client(storage):
    """A storage.Client; anonymous against an emulator (STORAGE_EMULATOR_HOST), else default credentials."""
    project = os.environ.get("GCS_PROJECT") or None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def _fetch_gs(url: str, part: Path, what: str, progress: Progress | None):
    from google.cloud import storage  # heavy import: only when used

    p = urlsplit(url)
    have = part.stat().st_size if part.exists() else 0
    try:
        client = gcs_client(storage)
        blob = client.bucket(p.netloc).blob(unquote(p.path.lstrip("/")))
        with open_part(part, "ab") as f:
            blob.download_to_file(f, start=have or None)
    except Exception as exc:
        raise ComfyverError(f"{what}: download of {url} failed: {web.redact(str(exc))}",
                            hint="check GOOGLE_APPLICATION_CREDENTIALS / GCS_PROJECT and the bucket") from None
    if progress:
        progress(part.stat().st_size - have)
    return hash_file(part)


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, size: int | None = None,
             what: str | None = None, progress: Progress | None = None, retries: int = 4) -> str:
    """Fetch `url` into `dest` (via `dest.part`) and return its sha256 hex.

    With `sha256`/`size` given, a mismatch raises and nothing is left at `dest`.
    A `.part` from an interrupted run is resumed (HTTP Range) and re-verified."""
    dest = Path(dest)
    what = what or str(dest)
    web.check_scheme(url, ("https", "http", "file", "gs"), what)
    if web.fetching_untrusted():  # a source a workflow named: http(s) on a public host, as at lock time
        try:
            web.check_untrusted_source(url)
        except ValueError as exc:
            raise ComfyverError(f"{what}: {exc}", hint="re-lock the model from a source you give with "
                                "`comfyver add-model ... --replace`") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    if part.is_symlink():  # not a download of ours: never read, resumed or written through
        part.unlink()
    if part.exists():
        if size is not None and part.stat().st_size > size:
            part.unlink()
        else:
            h = hash_file(part)
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        h = _fetch_http(url, part, h, what, progress, retries, limit=size)
    elif scheme == "file":
        h = _fetch_file(url, part, h, progress)
    else:
        h = _fetch_gs(url, part, what, progress)
    part.touch()
    got_size = part.stat().st_size
    digest = h.hexdigest()
    if size is not None and got_size != size:
        part.unlink()
        raise ComfyverError(f"{what}: size mismatch for {web.redact(url)}: expected {size} bytes, got "
                            f"{web.withheld(str(got_size))}",
                            hint="the source changed since it was locked; re-lock with `comfyver update`")
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ComfyverError(f"{what}: sha256 mismatch for {web.redact(url)}: expected {sha256}, got "
                            f"{web.withheld(digest)}",
                            hint="the source changed since it was locked; re-lock with `comfyver update`")
    os.replace(part, dest)
    return digest
