"""The model-source schemes, one row each: the one table every consumer reads.

A row says, for URLs of its scheme:
- `form`: the shape a URL must have (checked when a source is given; None: any URL of the scheme);
- `lock`: original URL -> locked {url, sha256, size[, auth]} (the API it asks, or a download that hashes);
- `fetch`: how a locked URL's bytes are appended to a `.part` file (None: the scheme never appears in a lock,
  it locks to another scheme's URL, as hf:// and civitai:// lock to https://);
- `auth`: which token its locked URLs need (`locked.auth`), when the scheme itself says so (gs:// -> gcs);
  for http(s) the host decides (web.auth_kind_for: the HF and Civitai endpoints);
- `untrusted`: whether a workflow (untrusted content) may name a source of it;
- `pin`: the locked URL for an original pinned by sha256 and size without asking anyone (default: itself).

Consumers: `modelsource` (check, lock, pin), `download` (fetch), `check_untrusted` (the lock's workflow
sources, and downloads inside `web.untrusted_fetches()`). A URL whose scheme has no row is a UsageError
everywhere, never another scheme's. Adding a scheme is one row plus its fetch (and, where it has an API, lock)
function; tests/test_schemes.py checks that the lock's JSON Schema and the Nix layer know its locked URLs
and token.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests

from comfyver.base import web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import ModelLocked
from comfyver.sources import resolvecache
from comfyver.sources.partfile import CHUNK, Progress, hash_file, open_part

# (url, what, expected sha256 or None) -> (sha256, size), downloading into the model store: the lockers that
# must hash bytes get it from the caller (modelsource), so this table imports nothing that imports it
HashByDownload = Callable[[str, str, "str | None"], "tuple[str, int]"]
# which token a locked URL needs (lockfile.ModelLocked's `auth`)
Auth = Literal["hf", "civitai", "gcs"]


class Fetch(Protocol):
    """(url, part, running sha256, what, progress, retries, limit) -> the sha256 of everything in `part`."""

    def __call__(self, url: str, part: Path, h: hashlib._Hash, *, what: str, progress: Progress | None = None,
                 retries: int = 4, limit: int | None = None) -> hashlib._Hash: ...


@dataclass(frozen=True)
class Scheme:
    name: str
    lock: Callable[[str, str, str | None, HashByDownload], ModelLocked]
    fetch: Fetch | None = None
    form: re.Pattern[str] | None = None
    form_hint: str = ""
    auth: Auth | None = None
    untrusted: bool = False
    pin: Callable[[str], str] | None = None


# ------------------------------------------------------------------ fetch functions (locked URL -> .part)

def fetch_http(url: str, part: Path, h: hashlib._Hash, *, what: str, progress: Progress | None = None, retries: int = 4,
               limit: int | None = None) -> hashlib._Hash:
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
                mode: Literal["ab", "wb"] = "ab"
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


def fetch_file(url: str, part: Path, h: hashlib._Hash, *, what: str, progress: Progress | None = None,
               **_: object) -> hashlib._Hash:
    src = Path(unquote(urlsplit(url).path))
    with open(src, "rb") as fi, open_part(part, "ab") as fo:
        fi.seek(fo.tell())
        while chunk := fi.read(CHUNK):
            fo.write(chunk)
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h


def gcs_client(storage: Any) -> Any:
    """A storage.Client; anonymous against an emulator (STORAGE_EMULATOR_HOST), else default credentials."""
    project = os.environ.get("GCS_PROJECT") or None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


def fetch_gs(url: str, part: Path, h: hashlib._Hash, *, what: str, progress: Progress | None = None,
             **_: object) -> hashlib._Hash:
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


# ------------------------------------------------------------------ lock functions (original URL -> locked)

HF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?/(?P<path>.+)\Z")
CIVITAI_RE = re.compile(r"^civitai://(?:(?P<vid>\d+)|sha256/(?P<hash>[0-9A-Fa-f]{64}))/?(?:\?.*)?\Z", re.S)


def _form(regex: re.Pattern[str], url: str) -> re.Match[str]:
    """The match of a URL that `check` already gave its row's form."""
    m = regex.match(url)
    assert m is not None, url
    return m


def _get_json(url: str, what: str) -> Any:
    """An API's JSON answer (None for an HTTP error status), read key by key by the caller."""
    _, data = web.get_json(url, what=what)
    return data


def lock_by_download(url: str, what: str, expect: str | None, hash_by_download: HashByDownload) -> ModelLocked:
    """No API to ask: download once (into the model store) and hash."""
    sha, size = hash_by_download(url, what, expect)
    return {"url": url, "sha256": sha, "size": size}


def lock_hf(url: str, what: str, expect: str | None, hash_by_download: HashByDownload) -> ModelLocked:
    """Hugging Face: the revision API gives the commit, the tree API the LFS sha256 and size (no download)."""
    m = _form(HF_RE, url)
    repo, rev, path = m["repo"], m["rev"] or "main", m["path"]
    base = web.hf_endpoint()
    info = _get_json(f"{base}/api/models/{repo}/revision/{quote(rev, safe='')}", what)
    commit = (info or {}).get("sha")
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ComfyverError(f"{what}: Hugging Face did not return a commit for {repo}@{rev}")
    hit = resolvecache.get("hf", base, repo, commit, path)
    if hit:
        return cast(ModelLocked, hit)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    tree_url = f"{base}/api/models/{repo}/tree/{commit}" + (f"/{quote(parent)}" if parent else "")
    entries = _get_json(tree_url, what)
    entry = next((e for e in entries or [] if e.get("path") == path and e.get("type") == "file"), None)
    if entry is None:
        raise ComfyverError(f"{what}: {path!r} not found in {repo}@{commit[:12]}", hint="check the file path in the hf:// URL")
    locked_url = f"{base}/{repo}/resolve/{commit}/{quote(path)}"
    lfs = entry.get("lfs")
    if lfs and re.fullmatch(r"[0-9a-f]{64}", lfs.get("oid", "")):
        sha, size = lfs["oid"], int(lfs.get("size", entry.get("size")))
    else:  # a plain git file: its oid is a git sha1, so hash the bytes
        sha, size = hash_by_download(locked_url, what, None)
    locked: ModelLocked = {"url": locked_url, "sha256": sha, "size": size, "auth": "hf"}
    return resolvecache.put(locked, "hf", base, repo, commit, path)


def _content_length(url: str) -> int | None:
    try:
        r = web.session().head(url, headers=web.auth_headers(url), allow_redirects=True, timeout=30)
    except Exception:
        return None
    n = r.headers.get("Content-Length")
    return int(n) if r.ok and n and n.isdigit() else None


def lock_civitai(url: str, what: str, expect: str | None, hash_by_download: HashByDownload) -> ModelLocked:
    """Civitai: the model-version API (by id or by hash) gives the file's SHA256 and download URL."""
    parts = urlsplit(url)
    m = _form(CIVITAI_RE, url)
    want_file = parse_qs(parts.query).get("file", [None])[0]
    base = web.civitai_endpoint()
    if m["vid"]:
        api = f"{base}/api/v1/model-versions/{m['vid']}"
        hit = resolvecache.get("civitai", base, m["vid"], want_file)
        if hit:
            return cast(ModelLocked, hit)
    else:
        api = f"{base}/api/v1/model-versions/by-hash/{m['hash'].upper()}"
    info = _get_json(api, what)
    files = (info or {}).get("files") or []
    if want_file:
        f = next((f for f in files if f.get("name") == want_file), None)
    elif m["hash"]:
        f = next((f for f in files if (f.get("hashes") or {}).get("SHA256", "").lower() == m["hash"].lower()), None)
    else:
        f = next((f for f in files if f.get("primary")), files[0] if files else None)
    if not f:
        raise ComfyverError(f"{what}: Civitai model version has no matching file" + (f" {want_file!r}" if want_file else ""),
                            hint="add ?file=<name> to pick one of: " + ", ".join(x.get("name", "?") for x in files))
    sha = (f.get("hashes") or {}).get("SHA256", "").lower()
    dl = f.get("downloadUrl") or f"{base}/api/download/models/{info.get('id')}"
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        sha, size = hash_by_download(dl, what, None)
    else:
        size = _content_length(dl) or round(float(f.get("sizeKB", 0)) * 1024)
    locked: ModelLocked = {"url": dl, "sha256": sha, "size": size, "auth": "civitai"}
    return resolvecache.put(locked, "civitai", base, str(info.get("id")), want_file)


def lock_http(url: str, what: str, expect: str | None, hash_by_download: HashByDownload) -> ModelLocked:
    """http(s): a download that hashes, remembered by the server's validator (ETag / Last-Modified)."""
    key: tuple[str | None, ...] | None = None
    try:
        r = web.session().head(url, headers=web.auth_headers(url), allow_redirects=True, timeout=30)
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        if r.ok and validator:
            key = ("http", url, validator, r.headers.get("Content-Length"))
            hit = resolvecache.get(*key)
            if hit:
                return cast(ModelLocked, hit)
    except Exception:
        pass
    sha, size = hash_by_download(url, what, expect)
    locked: ModelLocked = {"url": url, "sha256": sha, "size": size}
    if auth := locked_auth(url):  # http(s): the host's token (web.auth_kind_for)
        locked["auth"] = auth
    return resolvecache.put(locked, *key) if key else locked


def lock_file(url: str, what: str, expect: str | None, hash_by_download: HashByDownload) -> ModelLocked:
    """file://: hashed once, remembered by (size, mtime, inode)."""
    path = Path(unquote(urlsplit(url).path))
    try:
        st = path.stat()
    except OSError as exc:
        raise ComfyverError(f"{what}: cannot read {url}: {exc.strerror}") from None
    key = ("file", str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    hit = resolvecache.get(*key)
    if hit and (expect is None or hit["sha256"] == expect):
        return cast(ModelLocked, hit)
    sha, size = hash_by_download(url, what, expect)
    locked: ModelLocked = {"url": url, "sha256": sha, "size": size}
    return resolvecache.put(locked, *key)


def pin_hf(url: str) -> str:
    m = _form(HF_RE, url)
    return f"{web.hf_endpoint()}/{m['repo']}/resolve/{quote(m['rev'] or 'main', safe='')}/{quote(m['path'])}"


def pin_civitai(url: str) -> str:
    m = _form(CIVITAI_RE, url)
    if not m["vid"]:
        raise UsageError(f"{url}: civitai://sha256/... needs the API; pin a civitai://<modelVersionId> offline")
    return f"{web.civitai_endpoint()}/api/download/models/{m['vid']}"


# ------------------------------------------------------------------ the table

TABLE: dict[str, Scheme] = {s.name: s for s in (
    Scheme("hf", lock_hf, form=HF_RE, form_hint="hf://owner/repo[@rev]/path/to/file", untrusted=True,
           auth="hf", pin=pin_hf),
    Scheme("civitai", lock_civitai, form=CIVITAI_RE, form_hint="civitai://<modelVersionId> or civitai://sha256/<hex>",
           untrusted=True, auth="civitai", pin=pin_civitai),
    Scheme("https", lock_http, fetch=fetch_http, untrusted=True),
    Scheme("http", lock_http, fetch=fetch_http, untrusted=True),
    Scheme("file", lock_file, fetch=fetch_file),
    Scheme("gs", lock_by_download, fetch=fetch_gs, auth="gcs"),
)}


def names() -> tuple[str, ...]:
    """Every scheme a model source may have."""
    return tuple(TABLE)


def fetchable() -> tuple[str, ...]:
    """The schemes a locked URL may have (those with a fetch function)."""
    return tuple(n for n, s in TABLE.items() if s.fetch is not None)


def untrusted() -> tuple[str, ...]:
    """The schemes a workflow may name."""
    return tuple(n for n, s in TABLE.items() if s.untrusted)


def auth_kinds() -> set[str]:
    """Every `locked.auth` a lock may carry: the rows' own and the host-based ones (web.TOKEN_ENV)."""
    return {s.auth for s in TABLE.values() if s.auth} | set(web.TOKEN_ENV)


def _row(url: str, allowed: tuple[str, ...], what: str) -> Scheme:
    web.check_scheme(url, allowed, what)  # no row, no userinfo: a UsageError naming the schemes there are
    return TABLE[urlsplit(url).scheme]


def check(url: str, what: str) -> Scheme:
    """The row for a model source `url` as given, its form checked: an unknown scheme or a bad form is a UsageError."""
    row = _row(url, names(), what)
    if row.form is not None and not row.form.match(url):
        raise UsageError(f"{what}: {web.redact(url)!r} is not {row.form_hint}")
    return row


def for_fetch(url: str, what: str) -> Scheme:
    """The row whose fetch function reads the locked `url`; a scheme without one is a UsageError."""
    return _row(url, fetchable(), what)


def locked_auth(url: str) -> Auth | None:
    """Which token a locked URL needs: its scheme's own, else its host's (the HF / Civitai endpoint)."""
    row = TABLE.get(urlsplit(url).scheme)
    # web.auth_kind_for names a key of web.TOKEN_ENV: "hf" or "civitai"
    return (row.auth if row and row.fetch is not None else None) or cast("Auth | None", web.auth_kind_for(url))


def check_untrusted(url: str) -> None:
    """Raise ValueError unless `url`, taken from workflow content, has a scheme the table lets a workflow name and,
    for http(s), a public host (web.check_untrusted_source)."""
    web.check_untrusted_source(url, untrusted())
