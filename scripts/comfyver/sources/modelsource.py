"""Model sources: turn a model `original` {url} into `locked` {url, sha256, size, auth?}.

- `hf://owner/repo[@rev]/path`: Hugging Face revision API for the commit
  (GET /api/models/{repo}/revision/{rev} -> sha) and tree API for the LFS
  sha256 and size (GET /api/models/{repo}/tree/{commit}/{dir} -> [{path, size, lfs: {oid, size}}]).
  No download for LFS files. Locked URL: {endpoint}/{repo}/resolve/{commit}/{path}.
- `civitai://<modelVersionId>` or `civitai://sha256/<hex>` (by hash):
  GET /api/v1/model-versions/{id} or /api/v1/model-versions/by-hash/{hash}
  -> files[].hashes.SHA256, downloadUrl (the primary file unless `?file=<name>`).
- `https://`, `http://`, `file://`: downloaded and hashed (kept in the model cache).
- `gs://bucket/path`: downloaded with google-cloud-storage and hashed.

Each scheme's form, lock function, token and trust are its row in `schemes` (the one table); this module
checks a source against it, pins, and checks an expected sha256. A scheme without a row is an error.

Tokens (HF_TOKEN, CIVITAI_TOKEN) are sent as headers by `web`; a locked URL
never carries one, and `auth` only says which token a download may need.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from comfyver.base import web
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import ModelLocked, ModelOriginal
from comfyver.sources import download, modelstore, schemes
from comfyver.sources.schemes import CIVITAI_RE, HF_RE  # noqa: F401 - their home is the table

SCHEMES = schemes.names()


def hf_path_for_url(url: str) -> str | None:
    """`https://huggingface.co/<owner>/<repo>/resolve|blob/<ref>/<path>` (the HF endpoint's host) as
    `hf://<owner>/<repo>@<ref>/<path>`: locked to a commit with the LFS oid as sha256, no download."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc != urlsplit(web.hf_endpoint()).netloc or parts.username:
        return None
    m = re.fullmatch(r"/([A-Za-z0-9][\w.-]*)/([\w.-]+)/(?:resolve|blob)/([^/]+)/(.+)", unquote(parts.path))
    if not m or m.group(1) in ("datasets", "spaces", "api"):
        return None
    return f"hf://{m.group(1)}/{m.group(2)}@{m.group(3)}/{m.group(4)}"


def check_source(url: str, what: str) -> str:
    """`url` if its scheme has a row in the table and the URL has that row's form; else a UsageError."""
    schemes.check(url, what)
    return url


def _hash_by_download(url: str, what: str, expect: str | None) -> tuple[str, int]:
    """Download into the model store (so a later realize finds it) and return (sha256, size)."""
    store = modelstore.default_store()
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".resolve-", dir=store)
    os.close(fd)
    os.unlink(tmp)
    try:
        digest = download.download(url, tmp, sha256=expect, what=what)
        size = os.path.getsize(tmp)
        modelstore.adopt(store, Path(tmp), digest)
        return digest, size
    finally:
        for p in (tmp, tmp + ".part"):
            if os.path.exists(p):
                os.unlink(p)


def pinned_without_download(original: ModelOriginal) -> ModelLocked:
    """original {url, sha256, size}: what is known, recorded as is (`unverified` until fetch/realize check it)."""
    row = schemes.check(original["url"], original["url"])
    url = row.pin(original["url"]) if row.pin else original["url"]
    locked: ModelLocked = {"url": url, "sha256": original["sha256"], "size": original["size"], "unverified": True}
    if auth := schemes.locked_auth(url):
        locked["auth"] = auth
    return locked


def lock(original: ModelOriginal, what: str) -> ModelLocked:
    """original {url, sha256?, size?} -> locked {url, sha256, size, auth?}; an expected sha256 is checked.
    With both sha256 and size nothing is downloaded (pinned_without_download)."""
    row = schemes.check(original["url"], what)
    url = original["url"]
    if original.get("sha256") and original.get("size") is not None:
        return pinned_without_download(original)
    expect = original.get("sha256")
    locked = row.lock(url, what, expect, _hash_by_download).copy()
    if "auth" not in locked and (auth := schemes.locked_auth(locked["url"])):
        locked["auth"] = auth
    if expect and locked["sha256"] != expect:
        raise ComfyverError(f"{what}: sha256 mismatch: the lock asks for {expect}, {web.redact(url)} has "
                            f"{web.withheld(locked['sha256'])}",
                            hint="fix the sha256 in the model's original, or the source")
    return locked
