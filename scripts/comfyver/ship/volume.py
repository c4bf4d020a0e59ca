"""A version's models on RunPod network volumes, through RunPod's S3-compatible API.

`runpod://<volume-id>` is the bucket `<volume-id>` at the endpoint of the volume's datacenter
(https://s3api-<datacenter>.runpod.io/, region = the datacenter id; docs.runpod.io "S3-compatible API").
The datacenter comes from RunPod's REST API (`GET /networkvolumes/<id>`) unless given.

Objects use the layout the handler reads with the volume mounted at /runpod-volume and
MODELS_DIR=/runpod-volume/models: `models/sha256/<hex>`. The handler's realize links each model's
name to its blob, so the names need no objects. Each object records its sha256 as user metadata
(`x-amz-meta-sha256`). An object with the locked size and recorded sha256 is present and is skipped.

Uploads send a Content-MD5 with every request, so the server refuses bytes that changed on the way.
Files from `part_size` up go multipart, parts in parallel. After a kill, the next run finds the
upload in progress (ListMultipartUploads/ListParts), checks each finished part's ETag against the
local bytes, and sends only the rest. Every object is verified after upload: size, recorded sha256,
and the ETag the server computed from the bytes it stored (MD5, or MD5 of the part MD5s).
`verify_volume` reads every object back and hashes it.

Credentials come from the environment only: RUNPOD_S3_ACCESS_KEY / RUNPOD_S3_SECRET_KEY
(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). They never appear in output.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from comfyver.base import lockfile, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import Lock

SCHEME = "runpod://"
VOLUME_ID_RE = re.compile(r"[a-z0-9]{1,64}\Z")
DATACENTER_RE = re.compile(r"[A-Z]{2,4}-[A-Z]{2}-[0-9]{1,2}\Z")
# datacenters whose volumes speak S3 (docs.runpod.io/storage/s3-api); others are refused by name
S3_DATACENTERS = ("EU-CZ-1", "EU-RO-1", "EUR-IS-1", "EUR-NO-1", "US-CA-2", "US-GA-2", "US-IL-1", "US-KS-2",
                  "US-MD-1", "US-MO-1", "US-MO-2", "US-NC-1", "US-NC-2")
PREFIX = "models"
MIN_PART = 5 << 20  # S3's smallest part (all but the last)
MAX_PARTS = 10_000
DEFAULT_PART = 16 << 20

MAX_COPY = 5 << 30  # the largest object one CopyObject may copy
Progress = Callable[[int], None]
# progress_for(label, size): a context manager yielding a byte-count callback (or None)
ProgressFor = Callable[[str, int], AbstractContextManager[Progress | None]]


class SourceChanged(ComfyverError):
    """The local file no longer holds the bytes its sha256 names."""


def is_target(text: str) -> bool:
    return str(text).startswith(SCHEME)


def volume_id(target: str) -> str:
    vid = target[len(SCHEME):]
    if not VOLUME_ID_RE.match(vid):
        raise UsageError(f"{target!r}: expected runpod://<network-volume-id>",
                         hint="copy the volume id from the RunPod console (Storage) or `runpodctl nv list`")
    return vid


def endpoint_for(datacenter: str) -> str:
    """The S3 endpoint of `datacenter`. $COMFYVER_RUNPOD_S3_ENDPOINTS ("DC=URL,DC=URL") overrides (tests, proxies)."""
    from urllib.parse import urlsplit
    overrides = {}
    for item in filter(None, (x.strip() for x in os.environ.get("COMFYVER_RUNPOD_S3_ENDPOINTS", "").split(","))):
        dc, sep, url = (x.strip() for x in item.partition("="))
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
            ok = bool(sep and parts.scheme in ("http", "https") and parts.hostname) and " " not in url \
                and "@" not in parts.netloc
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"COMFYVER_RUNPOD_S3_ENDPOINTS: {web.redact(item)!r} is not DATACENTER=http(s)://HOST[:PORT]",
                             hint="e.g. COMFYVER_RUNPOD_S3_ENDPOINTS=EU-RO-1=http://127.0.0.1:9000, or unset it")
        overrides[dc.upper()] = url
    if datacenter in overrides:
        return overrides[datacenter]
    if datacenter in S3_DATACENTERS:
        return f"https://s3api-{datacenter.lower()}.runpod.io/"
    raise ComfyverError(f"datacenter {datacenter!r} has no S3-compatible API for network volumes",
                        hint="RunPod offers it in " + ", ".join(S3_DATACENTERS) + "; sync to a volume there, or "
                             "mount the volume in a pod and run `comfyver models sync <id> --to /runpod-volume/models`")


def credentials() -> tuple[str, str]:
    key = os.environ.get("RUNPOD_S3_ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("RUNPOD_S3_SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise UsageError("no S3 key for RunPod network volumes: set RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY",
                         hint="create one at RunPod: Settings > S3 API Keys (the access key is your user_... id)")
    return key, secret


@dataclass
class Volume:
    id: str
    datacenter: str
    endpoint: str
    client: Any = field(repr=False)  # boto3's S3 client (boto3 has no type information)
    prefix: str = PREFIX

    @property
    def target(self) -> str:
        return SCHEME + self.id

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/sha256/{sha256}"


def open_volume(target: str, datacenter: str | None = None, *, workers: int = 4, rest=None) -> Volume:
    """The volume named by `target`; its datacenter from `datacenter` or RunPod's REST API."""
    import boto3
    from botocore.config import Config

    vid = volume_id(target)
    if datacenter is None:
        from comfyver.ship.deploy import RunPodREST
        info = (rest or RunPodREST()).get_network_volume(vid)
        datacenter = info.get("dataCenterId") if isinstance(info, dict) else None
        if not isinstance(datacenter, str) or not DATACENTER_RE.match(datacenter.strip().upper()):
            raise ComfyverError(f"network volume {vid}: RunPod's answer names no datacenter id "
                                f"({web.redact(repr(datacenter))[:80]})", hint="give it with --datacenter (e.g. EU-RO-1)")
        datacenter = datacenter.strip()
    elif not DATACENTER_RE.match(datacenter.upper()):
        raise UsageError(f"--datacenter {datacenter!r} is not a RunPod datacenter id", hint="e.g. EU-RO-1, US-KS-2")
    datacenter = datacenter.upper()
    endpoint = endpoint_for(datacenter)
    key, secret = credentials()
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=workers + 2, connect_timeout=20, read_timeout=120,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    try:
        session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=datacenter,
                                        profile_name=None, botocore_session=_plain_botocore_session())
        client = session.client("s3", endpoint_url=endpoint, config=config)
    except Exception as exc:
        raise ComfyverError(f"{SCHEME}{vid}: cannot set up S3 for {endpoint}: {web.redact(str(exc))}",
                            hint="check RUNPOD_S3_ACCESS_KEY, RUNPOD_S3_SECRET_KEY and COMFYVER_RUNPOD_S3_ENDPOINTS"
                            ) from None
    vol = Volume(vid, datacenter, endpoint, client)
    _check_bucket(vol)
    return vol


def _plain_botocore_session():
    """A botocore session that ignores AWS_PROFILE and config files: the keys given are the only ones used."""
    import botocore.session
    s = botocore.session.Session()
    s.set_config_variable("profile", None)
    return s


def _check_bucket(vol: Volume) -> None:
    """The volume exists in that datacenter and the keys may use it (else every object would look missing)."""
    from botocore.exceptions import ClientError
    try:
        vol.client.head_bucket(Bucket=vol.id)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ComfyverError(f"{vol.target}: no such network volume in {vol.datacenter}",
                                hint="check the volume id (RunPod console: Storage) and --datacenter") from None
        raise s3_error(vol, "cannot open the volume", exc) from None
    except Exception as exc:
        raise s3_error(vol, "cannot reach the S3 endpoint", exc) from None


def s3_error(vol: Volume, what: str, exc: Exception) -> ComfyverError:
    """A clear error for a failed S3 call (botocore's text carries no credentials; it is redacted anyway)."""
    from botocore.exceptions import ClientError
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    hints = {"InvalidAccessKeyId": "RunPod refused the S3 key: check RUNPOD_S3_ACCESS_KEY (your user_... id)",
             "SignatureDoesNotMatch": "RunPod refused the S3 secret: check RUNPOD_S3_SECRET_KEY",
             "AccessDenied": "the S3 key may not access this volume",
             "403": "RunPod refused the S3 key or secret: check RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY",
             "NoSuchBucket": f"no volume {vol.id} in {vol.datacenter}: check the id and --datacenter"}
    return ComfyverError(f"{vol.target} ({vol.datacenter}): {what}: {web.redact(str(exc))}",
                         hint=hints.get(code, f"the S3 endpoint {web.redact(vol.endpoint)} failed; run the command "
                                              "again (a sync resumes where it stopped)"))


# --- what is on the volume --------------------------------------------------------------------------
@dataclass
class Remote:
    size: int
    sha256: str | None
    etag: str


def head(vol: Volume, sha256: str) -> Remote | None:
    from botocore.exceptions import ClientError
    try:
        r = vol.client.head_object(Bucket=vol.id, Key=vol.key(sha256))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise s3_error(vol, f"cannot read {vol.key(sha256)}", exc) from None
    except Exception as exc:  # connection errors: botocore raises its own classes
        raise s3_error(vol, f"cannot reach the S3 endpoint for {vol.key(sha256)}", exc) from None
    return Remote(r["ContentLength"], (r.get("Metadata") or {}).get("sha256"), r.get("ETag", "").strip('"'))


def status(vol: Volume, sha256: str, size: int) -> str:
    """present | missing | a sentence saying what differs."""
    r = head(vol, sha256)
    if r is None:
        return "missing"
    if r.size != size:
        return f"size {r.size}, locked {size}"
    if r.sha256 != sha256:
        return f"recorded sha256 {r.sha256 or 'none'}, locked {sha256}"
    return "present"


# --- upload -----------------------------------------------------------------------------------------
def part_size_for(size: int, part_size: int = DEFAULT_PART) -> int:
    return max(part_size, MIN_PART, -(-size // MAX_PARTS))


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def upload(vol: Volume, src: Path, sha256: str, size: int, *, part_size: int = DEFAULT_PART, workers: int = 4,
           progress: Progress | None = None) -> tuple[str, int]:
    """Put the verified local file `src` as the blob of `sha256`; return (uploaded | resumed, bytes sent).
    The object is verified afterwards (size, recorded sha256, the server's ETag of the bytes)."""
    key = vol.key(sha256)
    if os.stat(src).st_size != size:
        raise ComfyverError(f"{src}: {os.stat(src).st_size} bytes, locked {size}; not uploaded")
    try:
        if size < part_size_for(size, part_size):
            with open(src, "rb") as fh:
                data = fh.read()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise SourceChanged(f"{src} changed before it was uploaded (its bytes no longer hash to {sha256})",
                                    hint="leave the file alone and sync again")
            digest = _md5(data)
            vol.client.put_object(Bucket=vol.id, Key=key, Body=data, Metadata={"sha256": sha256},
                                  ContentMD5=base64.b64encode(digest).decode(), ContentType="application/octet-stream")
            if progress:
                progress(size)
            action, sent, want_etag = "uploaded", size, digest.hex()
        else:
            action, sent, want_etag = _multipart(vol, src, key, sha256, size, part_size, workers, progress)
    except ComfyverError:
        raise
    except Exception as exc:
        if status(vol, sha256, size) == "present":
            return "present", 0  # another sync of the same bytes completed the upload this one had joined
        raise s3_error(vol, f"upload of {key} failed", exc) from None
    got = head(vol, sha256)
    if got is not None and got.sha256 is None and got.size == size and got.etag == want_etag:
        # a resumed upload that another tool had begun: the bytes verified; record their sha256 in place
        got = _record_sha256(vol, key, sha256, size)
        want_etag = got.etag if got else want_etag  # a server-side copy gets the server's own ETag
    _abort_leftovers(vol, key)
    if got is None or got.size != size or got.sha256 != sha256 or got.etag != want_etag:
        raise ComfyverError(f"{vol.target}: {key} does not verify after upload ("
                            + (f"size {got.size}, sha256 {got.sha256}, ETag {got.etag}" if got else "absent")
                            + f"; want size {size}, sha256 {sha256}, ETag {want_etag})",
                            hint="run the sync again; if it repeats, the volume's S3 API stores other bytes than sent")
    return action, sent


def _record_sha256(vol: Volume, key: str, sha256: str, size: int) -> Remote | None:
    """Set the sha256 record on an object whose bytes verified (size and ETag) but that lacks it: metadata is
    fixed when an upload begins, and the resumed upload was begun by another tool."""
    if size > MAX_COPY:
        vol.client.delete_object(Bucket=vol.id, Key=key)
        raise ComfyverError(f"{vol.target}: {key} was completed from an unfinished upload another tool began, "
                            "without comfyver's sha256 record, and is too large to record it in place; removed",
                            hint="run the sync again: it uploads the file afresh")
    vol.client.copy_object(Bucket=vol.id, Key=key, CopySource={"Bucket": vol.id, "Key": key},
                           Metadata={"sha256": sha256}, MetadataDirective="REPLACE",
                           ContentType="application/octet-stream")
    return head(vol, sha256)


def _abort_leftovers(vol: Volume, key: str) -> None:
    """Unfinished uploads of a key that is now complete only take space on the volume."""
    from botocore.exceptions import ClientError
    try:
        for u in vol.client.list_multipart_uploads(Bucket=vol.id, Prefix=key).get("Uploads", []):
            if u["Key"] == key:
                vol.client.abort_multipart_upload(Bucket=vol.id, Key=key, UploadId=u["UploadId"])
    except ClientError:
        pass  # an S3 dialect without listing: nothing to clean


def _in_progress(vol: Volume, key: str) -> tuple[str | None, dict[int, tuple[str, int]]]:
    """The newest unfinished multipart upload of `key` and its finished parts {number: (etag, size)}."""
    from botocore.exceptions import ClientError
    try:
        ups = [u for u in vol.client.list_multipart_uploads(Bucket=vol.id, Prefix=key).get("Uploads", [])
               if u["Key"] == key]
    except ClientError:  # an S3 dialect without listing: start afresh
        return None, {}
    if not ups:
        return None, {}
    upload_id = max(ups, key=lambda u: u["Initiated"])["UploadId"]
    parts: dict[int, tuple[str, int]] = {}
    marker = 0
    while True:
        try:
            r = vol.client.list_parts(Bucket=vol.id, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        except ClientError:  # gone meanwhile (completed or aborted by another sync)
            return None, {}
        parts.update({p["PartNumber"]: (p["ETag"].strip('"'), p["Size"]) for p in r.get("Parts", [])})
        if not r.get("IsTruncated"):
            return upload_id, parts
        nxt = r.get("NextPartNumberMarker")
        if not isinstance(nxt, int) or not marker < nxt < MAX_PARTS:  # S3 has at most 10,000 parts
            raise ComfyverError(f"{vol.target}: listing the parts of the unfinished upload of {key} never ends (the "
                                f"server says there are more after part {marker}, next {nxt!r})",
                                hint=f"abort that upload (upload id {upload_id}) with an S3 client, or ask RunPod "
                                     "support; then sync again")
        marker = nxt


def _multipart(vol: Volume, src: Path, key: str, sha256: str, size: int, part_size: int, workers: int,
               progress: Progress | None) -> tuple[str, int, str]:
    """Parts are read in order by this thread, which hashes the whole file on the way, and sent by `workers`
    threads, which MD5 them; at most `workers` parts are in memory. A file whose bytes no longer hash to
    `sha256` is not completed: the volume never holds an object whose recorded hash is false."""
    upload_id, done = _in_progress(vol, key)
    psize = part_size_for(size, part_size)
    if upload_id and 1 in done and done[1][1] < size and done[1][1] >= MIN_PART:
        psize = done[1][1]  # resume with the part size that upload began with
    elif upload_id:
        upload_id, done = None, {}
    resumed = upload_id is not None
    if upload_id is None:
        upload_id = vol.client.create_multipart_upload(Bucket=vol.id, Key=key, Metadata={"sha256": sha256},
                                                       ContentType="application/octet-stream")["UploadId"]
    count = -(-size // psize)
    whole, digests = hashlib.sha256(), [b""] * count
    futures: list[Future[int]] = []
    slots = threading.Semaphore(max(1, workers))

    def send(n: int, data: bytes) -> int:
        """Part n: its MD5 (hashed here, beside the reader's sha256), then sent unless the volume has it."""
        try:
            digests[n - 1] = digest = _md5(data)
            if done.get(n) != (digest.hex(), len(data)):
                vol.client.upload_part(Bucket=vol.id, Key=key, UploadId=upload_id, PartNumber=n, Body=data,
                                       ContentMD5=base64.b64encode(digest).decode())
                sent = len(data)
            else:
                sent = 0  # the volume has exactly these bytes as part n
            if progress:
                progress(len(data))
            return sent
        finally:
            slots.release()

    with open(src, "rb") as fh, ThreadPoolExecutor(max(1, workers), thread_name_prefix="s3-part") as pool:
        for n in range(1, count + 1):
            if any(f.done() and f.exception() for f in futures):
                break  # a part failed: stop reading, report it below
            slots.acquire()
            data = fh.read(psize)
            whole.update(data)
            futures.append(pool.submit(send, n, data))
        sent = sum(f.result() for f in futures)
    if whole.hexdigest() != sha256:
        vol.client.abort_multipart_upload(Bucket=vol.id, Key=key, UploadId=upload_id)
        raise SourceChanged(f"{src} changed while it was uploaded (its bytes no longer hash to {sha256}); "
                            f"{vol.target} was left without it", hint="leave the file alone and sync again")
    vol.client.complete_multipart_upload(
        Bucket=vol.id, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{d.hex()}"'} for n, d in enumerate(digests, 1)]})
    etag = f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"
    return ("resumed" if resumed else "uploaded"), sent, etag


def read_sha256(vol: Volume, sha256: str, progress: Progress | None = None) -> str:
    """sha256 of the object's bytes as the volume serves them."""
    try:
        body = vol.client.get_object(Bucket=vol.id, Key=vol.key(sha256))["Body"]
        h = hashlib.sha256()
        for chunk in body.iter_chunks(4 << 20):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    except Exception as exc:
        raise s3_error(vol, f"cannot read {vol.key(sha256)}", exc) from None
    return h.hexdigest()


def deploy_warnings(lock: Lock, volume_id: str | None, rest=None) -> list[str]:
    """What `deploy` should say about the endpoint's network volume: the version's models it lacks, or why
    that could not be checked. Never raises: the deploy itself has already happened."""
    if not volume_id or not lock.get("models"):
        return []
    if not isinstance(volume_id, str):
        return [f"could not check the endpoint's network volume: RunPod named it {web.redact(repr(volume_id))[:80]}"]
    target = SCHEME + volume_id
    try:
        vol = open_volume(target, rest=rest)
        missing = [k for k, m in list_version(lock, vol).items() if m["status"] != "present"]
    except ComfyverError as exc:
        return [f"could not check {web.redact(target)} for the version's models: {exc.message}"
                + (f" ({exc.hint})" if exc.hint else "")]
    except Exception as exc:  # the deploy has happened: say why, never fail it here
        return [f"could not check {web.redact(target)} for the version's models: {web.redact(repr(exc))[:300]}"]
    if not missing:
        return []
    return [f"{target} ({vol.datacenter}) lacks {len(missing)} model(s) of version {lock['id']}: "
            + ", ".join(missing) + "; jobs that need them cannot load them until they are there. Run "
            f"`comfyver models sync {lock['id']} --to {target}`"]


# --- a version's models -----------------------------------------------------------------------------
class SyncResult(TypedDict):
    """What sync_version did on one volume."""
    target: str
    datacenter: str
    models: dict[str, str]  # key -> present | uploaded | resumed
    bytes_sent: int
    bytes_skipped: int
    verified: int


class ModelOnVolume(TypedDict):
    sha256: str
    size: int
    status: str  # present | missing | what differs


def sync_version(lock: Lock, vol: Volume, *, store: Path, source: Path | None = None, offline: bool = False,
                 rehash: bool = False, part_size: int = DEFAULT_PART, workers: int = 4,
                 progress_for: ProgressFor | None = None) -> SyncResult:
    """Every model of `lock` onto `vol`. The bytes come from `source` (a models folder or store, used in place
    when they match the lock) or the local store `store` (downloaded there first if needed).
    `rehash`: read back each object that looks present and upload it again unless its bytes hash right."""
    from contextlib import nullcontext

    from comfyver.sources import modelstore
    cache = modelstore.StatCache(rehash=rehash)
    out: SyncResult = {"target": vol.target, "datacenter": vol.datacenter, "models": {}, "bytes_sent": 0,
                       "bytes_skipped": 0, "verified": 0}
    try:
        for key, m in sorted(lock["models"].items()):
            sha, size = m["locked"]["sha256"], m["locked"]["size"]
            if status(vol, sha, size) == "present" and (not rehash or read_sha256(vol, sha) == sha):
                out["models"][key] = "present"
                out["bytes_skipped"] += size
                continue
            seed = modelstore.seed_candidate(source, key, sha) if source else None
            if seed is not None and modelstore.check_file(seed, sha, size, cache) is not None:
                seed = None  # a file by that name with other bytes: not used
            untrusted = lockfile.from_workflow(m)
            local = seed or modelstore.ensure(store, key, m["locked"], offline=offline, cache=cache,
                                              untrusted=untrusted)
            with progress_for(f"{vol.target} {key}", size) if progress_for else nullcontext() as progress:
                try:
                    action, sent = upload(vol, local, sha, size, part_size=part_size, workers=workers,
                                          progress=progress)
                except SourceChanged:
                    if seed is not None:
                        raise
                    # the store's blob is corrupt although its stat looked unchanged: check it and fetch again
                    local = modelstore.ensure(store, key, m["locked"], offline=offline,
                                              cache=modelstore.StatCache(rehash=True), untrusted=untrusted)
                    action, sent = upload(vol, local, sha, size, part_size=part_size, workers=workers,
                                          progress=progress)
            out["models"][key] = action
            out["bytes_sent"] += sent
            out["bytes_skipped"] += size - sent
            out["verified"] += 1
    finally:
        cache.save()
    return out


def list_version(lock: Lock, vol: Volume) -> dict[str, ModelOnVolume]:
    """key -> {sha256, size, status} for every model of `lock` on `vol` (from object metadata; nothing is read)."""
    return {key: {"sha256": m["locked"]["sha256"], "size": m["locked"]["size"],
                  "status": status(vol, m["locked"]["sha256"], m["locked"]["size"])}
            for key, m in sorted(lock["models"].items())}


def verify_version(lock: Lock, vol: Volume, progress_for: ProgressFor | None = None) -> dict[str, str]:
    """key -> ok | missing | what differs: every object read back and hashed."""
    from contextlib import nullcontext
    out: dict[str, str] = {}
    for key, m in sorted(lock["models"].items()):
        sha, size = m["locked"]["sha256"], m["locked"]["size"]
        found = status(vol, sha, size)
        if found != "present":
            out[key] = found
            continue
        with progress_for(f"{vol.target} {key}", size) if progress_for else nullcontext() as progress:
            got = read_sha256(vol, sha, progress)
        out[key] = "ok" if got == sha else f"bytes hash to {got}, locked {sha}"
    return out
