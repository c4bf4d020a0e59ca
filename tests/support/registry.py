"""Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, and docker-archive images built from folders.

`Registry` serves a filesystem storage root in a temp folder, optionally
behind htpasswd (bcrypt) auth, and keeps its access log so tests can see
which blobs were uploaded. `write_docker_archive` writes the same kind of tar
that `nix build .#image-<id>` (dockerTools) produces: manifest.json + config
+ one uncompressed tar per layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import requests

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, workdir: Path, users: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = self.workdir / "registry.log"
        auth = ""
        if users:
            import bcrypt

            lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}" for u, p in users.items()]
            (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: comfyver-test\n    path: {self.workdir / 'htpasswd'}\n"
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def uploaded_digests(self) -> list[str]:
        """Blob digests completed by `PUT .../blobs/uploads/<uuid>?digest=...` so far (from the access log)."""
        return re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ?]+\?[^ "]*digest=(sha256(?:%3A|:)[0-9a-f]{64})[^"]*" 201',
                          self.log_text())

    def blob_digests(self) -> set[str]:
        d = self.storage / "docker/registry/v2/blobs/sha256"
        return {f"sha256:{p.name}" for p in d.glob("*/*")} if d.is_dir() else set()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_docker_archive(path: Path, layers: list[dict[str, bytes]], tag: str = "comfyver-test:latest") -> dict:
    """Write a docker-archive tar with one layer per dict (file name -> bytes); returns layer diff_ids."""
    layer_tars = [_tar_bytes(files) for files in layers]
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layer_tars]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:01Z",
        "config": {"Cmd": ["/bin/handler"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:01Z"} for _ in layer_tars],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    members = {config_name: config}
    for d, t in zip(diff_ids, layer_tars):
        members[f"{d[7:]}/layer.tar"] = t
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [tag],
                                            "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
    Path(path).write_bytes(_tar_bytes(members))
    return {"diff_ids": diff_ids, "layer_sizes": [len(t) for t in layer_tars]}


def fresh_runner_path(folder: Path) -> str:
    """A PATH whose `skopeo` runs as on a fresh CI runner: no blob-info cache from earlier runs.

    skopeo remembers which compressed blob a layer became (`$HOME/.local/share/containers/cache` for a user,
    `/var/lib/containers/cache` for root) and skips layers the registry already has only through it. The
    wrapper gives every skopeo call an empty HOME and, for root, an empty tmpfs over /var/lib/containers in
    a private mount namespace (nothing of the machine's cache is read or changed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    real = shutil.which("skopeo") or "/usr/bin/skopeo"
    wrapper = folder / "skopeo"
    fresh_home = 'home=$(mktemp -d) && export HOME="$home" XDG_DATA_HOME="$home/.local/share"'
    if os.geteuid() == 0:
        private = f"mkdir -p /var/lib/containers && mount -t tmpfs none /var/lib/containers && exec {real} \\\"\\$@\\\""
        run = f'exec unshare -m sh -c "{private}" sh "$@"'
    else:
        run = f'exec {real} "$@"'
    wrapper.write_text(f"#!/bin/sh\n{fresh_home}\n{run}\n")
    wrapper.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
