"""Delivering output files: Google Cloud Storage (default), S3-compatible buckets, or base64 in the result."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import time
from datetime import timedelta
from typing import BinaryIO
from urllib.parse import urlsplit

from handler.errors import JobError, redact
from handler.outputs import chunks
from handler.settings import Settings

MODES = ("gcs", "s3", "base64")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]\Z")


def clean_prefix(prefix, what: str = "gcs_prefix") -> str:
    if not isinstance(prefix, str) or len(prefix) > 512:
        raise JobError("input", f"{what}: expected a string of at most 512 characters")
    parts = [p for p in prefix.strip("/").split("/") if p]
    if any(p in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._=+@ -]+", p) for p in parts):
        raise JobError("input", f"{what}: {prefix!r} is not a safe object prefix",
                       hint="use folder names made of letters, digits and . _ - = + @")
    return "/".join(parts)


def object_key(prefix: str, job_id: str, relpath: str) -> str:
    job = re.sub(r"[^A-Za-z0-9._-]", "_", str(job_id))[:128] or "job"
    return "/".join(p for p in (prefix, job, relpath) if p)


def base64_entries(files: list[tuple[dict, BinaryIO]], limit: int) -> None:
    """Put each file's data into its entry, unless the total of the entries' sizes (checked before anything is
    read) would exceed RunPod's result size limit. At most `size` bytes are read from each file."""
    total = sum((e["size"] + 2) // 3 * 4 for e, _ in files)
    if total > limit:
        raise JobError("output_too_large",
                       f"outputs are {total / 1e6:.1f} MB as base64, over the {limit / 1e6:.0f} MB that a RunPod "
                       "result can carry", hint='use "output_mode": "gcs" or "s3" for large outputs',
                       size=total, limit=limit)
    for entry, fh in files:
        entry["data"] = base64.b64encode(fh.read(entry["size"])).decode()


class GCSStore:
    def __init__(self, settings: Settings, bucket: str):
        if not bucket or not BUCKET_NAME.match(bucket):
            raise JobError("input", f"gcs_bucket: {bucket!r} is not a valid bucket name" if bucket else
                           "output_mode gcs needs a bucket", hint="set GCS_BUCKET or pass gcs_bucket in the job, "
                           'or use "output_mode": "base64"')
        self.settings, self.bucket_name = settings, bucket
        self._bucket = None

    def bucket(self):
        if self._bucket is None:
            from google.cloud import storage
            kw = {"project": self.settings.gcs_project}
            if os.environ.get("STORAGE_EMULATOR_HOST") and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                from google.auth.credentials import AnonymousCredentials
                kw = {"project": self.settings.gcs_project or "comfyver", "credentials": AnonymousCredentials()}
            try:
                client = storage.Client(**kw)
            except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
                raise JobError("storage", f"GCS: cannot create a client: {redact(exc)}",
                               hint="set GOOGLE_APPLICATION_CREDENTIALS to a service account key file") from None
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    def put(self, key: str, fh: BinaryIO, size: int, content_type: str) -> dict:
        """Upload `size` bytes of the binary file `fh` (from its start), in pieces of at most 8 MiB."""
        from google.api_core import exceptions as gexc
        s = self.settings
        blob = self.bucket().blob(key, chunk_size=8 * 1024 * 1024)
        attempts = max(1, s.gcs_retries + 1)
        last = None
        for i in range(attempts):
            try:
                fh.seek(0)
                blob.upload_from_file(fh, size=size, content_type=content_type, if_generation_match=0, retry=None,
                                      timeout=120)
                break
            except gexc.PreconditionFailed:
                # already there: a previous attempt landed (its answer was lost), or a name clash
                blob.reload(retry=None, timeout=30)
                fh.seek(0)
                md5 = hashlib.md5()
                for chunk in chunks(fh, size):
                    md5.update(chunk)
                if blob.md5_hash != base64.b64encode(md5.digest()).decode():
                    raise JobError("storage", f"GCS: gs://{self.bucket_name}/{key} already exists with other "
                                   "content; refusing to overwrite", hint="use another gcs_prefix") from None
                break
            except (gexc.Forbidden, gexc.Unauthorized, gexc.NotFound) as exc:
                raise JobError("storage", f"GCS: upload to gs://{self.bucket_name}/{key} refused: "
                               f"{redact(exc)}", hint="check that the bucket exists and the service account "
                               "may create objects in it") from None
            except Exception as exc:
                last = exc
                if i + 1 < attempts:
                    time.sleep(s.gcs_retry_base_sleep * (2 ** i))
        else:
            raise JobError("storage", f"GCS: upload to gs://{self.bucket_name}/{key} failed after {attempts} "
                           f"attempts: {type(last).__name__}: {redact(last)}", attempts=attempts,
                           hint="check network access to storage.googleapis.com (or STORAGE_EMULATOR_HOST); "
                           'raise GCS_RETRIES, or use "output_mode": "base64"')
        entry = {"url": f"gs://{self.bucket_name}/{key}", "gcs_url": f"gs://{self.bucket_name}/{key}"}
        try:
            if s.gcs_public:
                blob.make_public(retry=None, timeout=30)
                entry["public_url"] = blob.public_url
            if s.gcs_signed_url_ttl > 0:
                entry["signed_url"] = blob.generate_signed_url(version="v4", method="GET",
                                                               expiration=timedelta(seconds=s.gcs_signed_url_ttl))
        except Exception as exc:
            raise JobError("storage", f"GCS: uploaded gs://{self.bucket_name}/{key} but could not make a "
                           f"{'public' if s.gcs_public else 'signed'} URL: {type(exc).__name__}: {redact(exc)}",
                           hint="signed URLs need a service account key (GOOGLE_APPLICATION_CREDENTIALS); public "
                           "URLs need a bucket without uniform bucket-level access") from None
        return entry

    def check(self) -> None:
        """GCS_VALIDATE: create and delete a probe object, so a bad bucket is found at start, not per job."""
        key = f"{self.settings.gcs_prefix.strip('/')}/.comfyver-probe-{os.getpid()}-{time.time_ns()}"
        self.put(key, io.BytesIO(b"probe"), 5, "text/plain")
        self.bucket().blob(key).delete(retry=None, timeout=30)


AWS_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*)\.(?P<service>s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com)\Z")


def s3_endpoint_and_bucket(url: str) -> tuple[str, str | None]:
    """worker-comfyui's BUCKET_ENDPOINT_URL names the bucket in it: AWS virtual-hosted
    (`https://<bucket>.s3.<region>.amazonaws.com`, dotted bucket names too) or path-style
    (`http://host:9000/<bucket>`). -> (the service endpoint without the bucket, the bucket or None).
    Any other host (MinIO, R2, an IP address) is taken as it is: never a bucket."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    m = AWS_VIRTUAL_HOST.match(host)
    if m:
        return f"{parts.scheme}://{m['service']}{port}", m["bucket"]
    netloc = (f"[{host}]" if ":" in host else host) + port  # no userinfo: the keys come from the environment
    segments = [seg for seg in parts.path.split("/") if seg]
    if len(segments) == 1:
        return f"{parts.scheme}://{netloc}", segments[0]
    return f"{parts.scheme}://{netloc}" + parts.path.rstrip("/"), None


class S3Store:
    def __init__(self, settings: Settings):
        self.settings = settings
        if not settings.s3_endpoint_url:
            raise JobError("input", "output_mode s3 needs BUCKET_ENDPOINT_URL",
                           hint="set BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY and "
                           "BUCKET_NAME on the endpoint")
        # with BUCKET_NAME the endpoint is used as given; without it, the bucket is read from the endpoint
        self.endpoint_url, derived = ((settings.s3_endpoint_url, None) if settings.s3_bucket
                                      else s3_endpoint_and_bucket(settings.s3_endpoint_url))
        self.bucket_name = settings.s3_bucket or derived
        if not BUCKET_NAME.match(self.bucket_name or ""):
            raise JobError("input", f"output_mode s3: no bucket name in BUCKET_ENDPOINT_URL "
                           f"{redact(settings.s3_endpoint_url)!r}", hint="set BUCKET_NAME, or give the endpoint as "
                           "https://<bucket>.s3.<region>.amazonaws.com or http(s)://host/<bucket>")
        self._client = None

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            s = self.settings
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint_url, aws_access_key_id=s.s3_access_key_id,
                aws_secret_access_key=s.s3_secret_access_key,
                config=Config(retries={"max_attempts": max(1, s.gcs_retries + 1), "mode": "standard"},
                              connect_timeout=5, read_timeout=120, signature_version="s3v4"))
        return self._client

    def put(self, key: str, fh: BinaryIO, size: int, content_type: str) -> dict:
        """Upload the binary file `fh` (from its start), streamed by botocore (`size`: only GCS needs it)."""
        try:
            fh.seek(0)
            self.client().put_object(Bucket=self.bucket_name, Key=key, Body=fh, ContentType=content_type,
                                     IfNoneMatch="*")
            url = self.client().generate_presigned_url("get_object", Params={"Bucket": self.bucket_name, "Key": key},
                                                       ExpiresIn=self.settings.s3_signed_url_ttl)
        except Exception as exc:
            raise JobError("storage", f"S3: upload to s3://{self.bucket_name}/{key} failed: "
                           f"{type(exc).__name__}: {redact(exc)}",
                           hint="check BUCKET_ENDPOINT_URL, BUCKET_NAME and the access keys") from None
        return {"url": f"s3://{self.bucket_name}/{key}", "signed_url": url}
