"""Robust downloads: `*.part` files, HTTP Range resume, retries, sha256 verify, rename.

Sources: the schemes with a fetch function in `schemes` (the one table: http(s):// with the auth header
for HF / Civitai from the environment, file://, gs:// with google-cloud-storage); any other scheme is a
UsageError, never another scheme's fetch. Nothing is renamed into place before
its size and sha256 match; a `.part` whose bytes turn out wrong is dropped.
The running sha256 always covers exactly the bytes in the `.part` file, so
a resumed download is hashed once, not re-read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from comfyver.base import web
from comfyver.base.errors import ComfyverError
from comfyver.sources import schemes
from comfyver.sources.partfile import CHUNK, Progress, hash_file, open_part  # noqa: F401 - callers use them here


def download(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, size: int | None = None,
             what: str | None = None, progress: Progress | None = None, retries: int = 4) -> str:
    """Fetch `url` into `dest` (via `dest.part`) and return its sha256 hex.

    With `sha256`/`size` given, a mismatch raises and nothing is left at `dest`.
    A `.part` from an interrupted run is resumed (HTTP Range) and re-verified."""
    dest = Path(dest)
    what = what or str(dest)
    row = schemes.for_fetch(url, what)
    if web.fetching_untrusted():  # a source a workflow named: http(s) on a public host, as at lock time
        try:
            schemes.check_untrusted(url)
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
    assert row.fetch is not None  # for_fetch gives only a row with a fetch function
    h = row.fetch(url, part, h, what=what, progress=progress, retries=retries, limit=size)
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
