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

Tokens (HF_TOKEN, CIVITAI_TOKEN) are sent as headers by `web`; a locked URL
never carries one, and `auth` only says which token a download may need.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from comfyver.base import web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.sources import download, modelstore, resolvecache

HF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?/(?P<path>.+)\Z")
CIVITAI_RE = re.compile(r"^civitai://(?:(?P<vid>\d+)|sha256/(?P<hash>[0-9A-Fa-f]{64}))/?\Z")
SCHEMES = ("hf", "civitai", "https", "http", "file", "gs")


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
    web.check_scheme(url, SCHEMES, what)
    if url.startswith("hf://") and not HF_RE.match(url):
        raise UsageError(f"{what}: {url!r} is not hf://owner/repo[@rev]/path/to/file")
    if url.startswith("civitai://") and not CIVITAI_RE.match(url.split("?")[0]):
        raise UsageError(f"{what}: {url!r} is not civitai://<modelVersionId> or civitai://sha256/<hex>")
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


def _lock_hf(url: str, what: str) -> dict:
    m = HF_RE.match(url)
    repo, rev, path = m["repo"], m["rev"] or "main", m["path"]
    base = web.hf_endpoint()
    _, info = web.get_json(f"{base}/api/models/{repo}/revision/{quote(rev, safe='')}", what=what)
    commit = (info or {}).get("sha")
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ComfyverError(f"{what}: Hugging Face did not return a commit for {repo}@{rev}")
    hit = resolvecache.get("hf", base, repo, commit, path)
    if hit:
        return hit
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    tree_url = f"{base}/api/models/{repo}/tree/{commit}" + (f"/{quote(parent)}" if parent else "")
    _, entries = web.get_json(tree_url, what=what)
    entry = next((e for e in entries or [] if e.get("path") == path and e.get("type") == "file"), None)
    if entry is None:
        raise ComfyverError(f"{what}: {path!r} not found in {repo}@{commit[:12]}", hint="check the file path in the hf:// URL")
    locked_url = f"{base}/{repo}/resolve/{commit}/{quote(path)}"
    lfs = entry.get("lfs")
    if lfs and re.fullmatch(r"[0-9a-f]{64}", lfs.get("oid", "")):
        sha, size = lfs["oid"], int(lfs.get("size", entry.get("size")))
    else:  # a plain git file: its oid is a git sha1, so hash the bytes
        sha, size = _hash_by_download(locked_url, what, None)
    return resolvecache.put({"url": locked_url, "sha256": sha, "size": size, "auth": "hf"}, "hf", base, repo, commit, path)


def _lock_civitai(url: str, what: str) -> dict:
    parts = urlsplit(url)
    m = CIVITAI_RE.match(url.split("?")[0])
    want_file = parse_qs(parts.query).get("file", [None])[0]
    base = web.civitai_endpoint()
    if m["vid"]:
        api = f"{base}/api/v1/model-versions/{m['vid']}"
        hit = resolvecache.get("civitai", base, m["vid"], want_file)
        if hit:
            return hit
    else:
        api = f"{base}/api/v1/model-versions/by-hash/{m['hash'].upper()}"
    _, info = web.get_json(api, what=what)
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
        sha, size = _hash_by_download(dl, what, None)
    else:
        size = _content_length(dl, what) or round(float(f.get("sizeKB", 0)) * 1024)
    locked = {"url": dl, "sha256": sha, "size": size, "auth": "civitai"}
    return resolvecache.put(locked, "civitai", base, str(info.get("id")), want_file)


def _content_length(url: str, what: str) -> int | None:
    try:
        r = web.session().head(url, headers=web.auth_headers(url), allow_redirects=True, timeout=30)
    except Exception:
        return None
    n = r.headers.get("Content-Length")
    return int(n) if r.ok and n and n.isdigit() else None


def _lock_http(url: str, what: str, expect: str | None) -> dict:
    key = None
    try:
        r = web.session().head(url, headers=web.auth_headers(url), allow_redirects=True, timeout=30)
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        if r.ok and validator:
            key = ("http", url, validator, r.headers.get("Content-Length"))
            hit = resolvecache.get(*key)
            if hit:
                return hit
    except Exception:
        pass
    sha, size = _hash_by_download(url, what, expect)
    locked = {"url": url, "sha256": sha, "size": size}
    if web.auth_kind_for(url):
        locked["auth"] = web.auth_kind_for(url)
    return resolvecache.put(locked, *key) if key else locked


def _lock_file(url: str, what: str, expect: str | None) -> dict:
    path = Path(unquote(urlsplit(url).path))
    try:
        st = path.stat()
    except OSError as exc:
        raise ComfyverError(f"{what}: cannot read {url}: {exc.strerror}") from None
    key = ("file", str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    hit = resolvecache.get(*key)
    if hit and (expect is None or hit["sha256"] == expect):
        return hit
    sha, size = _hash_by_download(url, what, expect)
    return resolvecache.put({"url": url, "sha256": sha, "size": size}, *key)


def pinned_without_download(original: dict) -> dict:
    """original {url, sha256, size}: what is known, recorded as is (`unverified` until fetch/realize check it)."""
    url = original["url"]
    if m := HF_RE.match(url):
        url = f"{web.hf_endpoint()}/{m['repo']}/resolve/{quote(m['rev'] or 'main', safe='')}/{quote(m['path'])}"
    elif m := CIVITAI_RE.match(url.split("?")[0]):
        if not m["vid"]:
            raise UsageError(f"{url}: civitai://sha256/... needs the API; pin a civitai://<modelVersionId> offline")
        url = f"{web.civitai_endpoint()}/api/download/models/{m['vid']}"
    locked = {"url": url, "sha256": original["sha256"], "size": original["size"], "unverified": True}
    if auth := web.auth_kind_for(url) or ("gcs" if url.startswith("gs://") else None):
        locked["auth"] = auth
    return locked


def lock(original: dict, what: str) -> dict:
    """original {url, sha256?, size?} -> locked {url, sha256, size, auth?}; an expected sha256 is checked.
    With both sha256 and size nothing is downloaded (pinned_without_download)."""
    url = check_source(original["url"], what)
    if original.get("sha256") and original.get("size") is not None:
        return pinned_without_download(original)
    expect = original.get("sha256")
    scheme = urlsplit(url).scheme
    if scheme == "hf":
        locked = _lock_hf(url, what)
    elif scheme == "civitai":
        locked = _lock_civitai(url, what)
    elif scheme in ("http", "https"):
        locked = _lock_http(url, what, expect)
    elif scheme == "file":
        locked = _lock_file(url, what, expect)
    else:
        sha, size = _hash_by_download(url, what, expect)
        locked = {"url": url, "sha256": sha, "size": size, "auth": "gcs"}
    if expect and locked["sha256"] != expect:
        raise ComfyverError(f"{what}: sha256 mismatch: the lock asks for {expect}, {web.redact(url)} has "
                            f"{web.withheld(locked['sha256'])}",
                            hint="fix the sha256 in the model's original, or the source")
    return dict(locked)
