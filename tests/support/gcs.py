"""A real GCS emulator (`gcp-storage-emulator`) on 127.0.0.1 for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class GCSEmulator:
    """`gcp-storage-emulator start --in-memory` with one default bucket; `client()` talks to it anonymously."""

    def __init__(self, bucket: str):
        self.bucket_name = bucket
        self.port = _free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([shutil.which("gcp-storage-emulator") or "gcp-storage-emulator", "start",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--in-memory",
                                      "--default-bucket", bucket, "-q"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

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
