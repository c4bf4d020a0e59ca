"""A real GCS emulator (`gcp-storage-emulator`) on 127.0.0.1 for tests."""

from __future__ import annotations

import shutil
import subprocess

from tests.support.comfyui import free_port, wait_port


class GCSEmulator:
    """`gcp-storage-emulator start --in-memory` with one default bucket; `client()` talks to it anonymously."""

    def __init__(self, bucket: str):
        self.bucket_name = bucket
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([shutil.which("gcp-storage-emulator") or "gcp-storage-emulator", "start",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--in-memory",
                                      "--default-bucket", bucket, "-q"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=20)

    def client(self):
        import os

        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        return storage.Client(project="test", credentials=AnonymousCredentials())

    def bucket(self, name: str | None = None):
        return self.client().bucket(name or self.bucket_name)

    def read(self, bucket: str, key: str) -> bytes:
        return self.bucket(bucket).blob(key).download_as_bytes()

    def stop(self):
        self.proc.kill()
        self.proc.wait()
