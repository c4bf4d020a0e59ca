"""Push a version's OCI image (what `nix build .#image-<id>` produced) to a registry with skopeo.

The source is a docker-archive tar (`dockerTools.buildLayeredImage`: plain, gzip or zstd, which is what
the flake writes) or the script that `dockerTools.streamLayeredImage` builds, whose stdout is such a tar:
it is run into a temp file first.

A push is two skopeo copies. The archive's layers are first compressed into an OCI layout in a temp folder;
skopeo's gzip is deterministic, so a layer compresses to the same blob on every machine, and its digest is
known before anything is sent. The layout is then copied to the registry; skopeo asks the registry for
every blob (HEAD) and sends only those it lacks. So a fresh CI runner, with no skopeo blob-info cache,
sends only the layers that changed (pushing the archive directly compresses while sending, and only that
cache would tell skopeo what a layer became). Which blobs were skipped is read from skopeo's debug log.

Credentials come from $REGISTRY_USERNAME / $REGISTRY_PASSWORD (written to a
0600 authfile in a private temp folder, never put on a command line) or from
an authfile the user names; they are never printed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyver.base import lockfile, project
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import Lock
from comfyver.base.web import redact

# REGISTRY/IMAGE[:TAG]; the registry part must name a host (a dot, a port or localhost)
_HOST = (r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
         r"|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(?=:\d))(?::\d{1,5})?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
DEST_RE = re.compile(rf"^(?P<registry>{_HOST})/(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
                     r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Destination:
    registry: str
    repo: str
    tag: str

    @property
    def tagged(self) -> str:
        return f"{self.registry}/{self.repo}:{self.tag}"

    def with_digest(self, digest: str) -> str:
        return f"{self.registry}/{self.repo}@{digest}"


@dataclass(frozen=True)
class PushResult:
    destination: Destination
    digest: str
    layers_sent: int = 0
    layers_reused: int = 0  # the registry had them: not sent
    bytes_sent: int = 0  # compressed layer bytes sent
    bytes_total: int = 0  # compressed layer bytes of the whole image

    def as_json(self) -> dict[str, Any]:
        return {"image": self.destination.tagged, "digest": self.digest,
                "reference": self.destination.with_digest(self.digest),
                "layers": {"sent": self.layers_sent, "reused": self.layers_reused,
                           "bytes_sent": self.bytes_sent, "bytes_total": self.bytes_total}}


def default_tag(vid: str, lock: Lock) -> str:
    """`<id>-<first 12 hex of the lock digest>`: two different locks never share a tag."""
    return f"{vid}-{lockfile.lock_digest(lock)[:12]}"


def parse_destination(to: str, tag_if_missing: str) -> Destination:
    m = DEST_RE.match(to or "")
    if not m:
        raise UsageError(f"--to {to!r} is not REGISTRY/IMAGE[:TAG]",
                         hint="for example: ghcr.io/acme/comfyui or registry.example.com:5000/team/sdxl:v1 "
                              "(lowercase image path; the registry host comes first)")
    tag = m["tag"] or tag_if_missing
    if not TAG_RE.match(tag):
        raise UsageError(f"image tag {tag!r} is not a valid tag", hint="use letters, digits, '_', '.', '-' (max 128)")
    return Destination(m["registry"], m["repo"], tag)


def is_local_registry(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]")[0] + "]"
    return host in ("localhost", "127.0.0.1", "[::1]")


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b" or head[:4] == ZSTD_MAGIC or head[257:262] == b"ustar":
        return "archive"
    if head[:2] == b"#!":
        return "stream-script"
    raise ComfyverError(f"{path}: neither a docker-archive tar nor a streamLayeredImage script",
                        hint="pass what `nix build .#image-<id>` produced (its `result` link)")


def materialize_archive(source: Path, workdir: Path) -> Path:
    """The docker-archive to push: `source` itself, or the output of running a stream script."""
    if not source.exists():
        raise ComfyverError(f"{source}: no image to push",
                            hint="build it first: nix build .#image-<id> (writes ./result), or pass --archive FILE")
    if source.is_dir():
        raise ComfyverError(f"{source}: is a folder, not an image archive", hint="pass the tar or stream script file")
    if _kind(source) == "archive":
        if ":" in str(source.resolve()):
            raise UsageError(f"{source}: skopeo cannot read an archive whose path contains ':'",
                             hint="copy or link it to a path without ':'")
        return source
    if not os.access(source, os.X_OK):
        raise ComfyverError(f"{source}: stream script is not executable", hint="chmod +x it or rebuild with nix build")
    out = workdir / "image.tar"
    with open(out, "wb") as f:
        proc = subprocess.run([str(source.resolve())], stdout=f, stderr=subprocess.PIPE)
    if proc.returncode != 0 or _kind(out) != "archive":
        raise ComfyverError(f"{source}: stream script failed (exit {proc.returncode}): "
                            f"{redact(proc.stderr.decode(errors='replace')[-2000:])}")
    return out


def write_authfile(registry: str, username: str, password: str, workdir: Path) -> Path:
    """A containers-auth.json for one registry, created 0600 (never world-readable, not even briefly)."""
    path = workdir / "auth.json"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {registry: {"auth": token}}}, f)
    return path


def _explain(stderr: str, dest: Destination) -> ComfyverError:
    text = redact(stderr.strip())
    low = text.lower()
    if "unauthorized" in low or "authentication required" in low or "invalid username/password" in low \
            or "denied" in low:
        hint = ("the registry refused the credentials: set REGISTRY_USERNAME / REGISTRY_PASSWORD "
                "(or --authfile) to an account that may push to this repository")
    elif "connection refused" in low or "no such host" in low or "i/o timeout" in low or "pinging container registry" in low:
        hint = f"cannot reach {dest.registry}: check the host and port, and that the registry is running"
    elif "http response to https client" in low or "certificate" in low:
        hint = "TLS problem: use --insecure only for a registry you trust on a private network"
    else:
        hint = "see skopeo's message above"
    last = text.splitlines()[-1] if text else "(no message)"
    return ComfyverError(f"push to {dest.tagged} failed: {last}", hint=hint)


_SKIPPED = re.compile(r"Skipping blob (sha256:[0-9a-f]{64}) \(already present\)")


def _skopeo(cmd: list[str], env: dict[str, str], dest: Destination, on_line: Callable[[str], None] | None) -> set[str]:
    """Run one skopeo copy (stderr folded into stdout, so neither pipe can fill); return the blobs it skipped."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    skipped: set[str] = set()
    messages: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if 'level=debug' in line:
            if m := _SKIPPED.search(line):
                skipped.add(m[1])
            continue
        messages.append(line)
        if on_line and not line.startswith("time="):
            on_line(redact(line))
    if proc.wait() != 0:
        raise _explain("\n".join(messages[-50:]), dest)
    return skipped


def _layout_layers(layout: Path) -> list[tuple[str, int]]:
    """(digest, size) of each layer of the one image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":", 1)[1]).read_text())
    return [(layer["digest"], int(layer["size"])) for layer in manifest["layers"]]


def push(archive: Path, dest: Destination, *, authfile: Path | None = None, tls_verify: bool | None = None,
         retries: int = 3, on_line: Callable[[str], None] | None = None) -> PushResult:
    """Copy `archive` (docker-archive or stream script) to `dest` with skopeo; return the manifest digest and
    what was sent."""
    skopeo = shutil.which("skopeo")
    if not skopeo:
        raise ComfyverError("skopeo is not installed",
                            hint="install it (Debian/Ubuntu: apt-get install skopeo; Nix: nix shell nixpkgs#skopeo)")
    if tls_verify is None:
        tls_verify = not is_local_registry(dest.registry)
    with tempfile.TemporaryDirectory(prefix="comfyver-push-") as tmp_name:
        tmp = Path(tmp_name)
        src = materialize_archive(Path(archive), tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_PASSWORD", "REGISTRY_USERNAME")}
        auth: list[str] = []
        user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
        if authfile:
            if not Path(authfile).is_file():
                raise UsageError(f"--authfile {authfile}: no such file")
            auth.append(f"--dest-authfile={authfile}")
        elif user and password:
            auth.append(f"--dest-authfile={write_authfile(dest.registry, user, password, tmp)}")
        elif user or password:
            raise UsageError("set both REGISTRY_USERNAME and REGISTRY_PASSWORD (or neither)")
        layout = tmp / "oci"
        if on_line:
            on_line("compressing the layers (the same bytes on every machine)")
        _skopeo([skopeo, "copy", "--quiet", "--dest-compress", "--dest-compress-format=gzip",
                 f"docker-archive:{src}", f"oci:{layout}:image"], env, dest, None)
        layers = _layout_layers(layout)
        skipped = _skopeo([skopeo, "--debug", "copy", f"--retry-times={int(retries)}",
                           f"--dest-tls-verify={'true' if tls_verify else 'false'}", f"--digestfile={tmp / 'digest'}",
                           *auth, f"oci:{layout}:image", f"docker://{dest.tagged}"], env, dest, on_line)
        digest = (tmp / "digest").read_text().strip()
    if not DIGEST_RE.match(digest):
        raise ComfyverError(f"push to {dest.tagged}: skopeo reported no manifest digest ({digest!r})")
    sent = [(d, size) for d, size in layers if d not in skipped]
    return PushResult(dest, digest, layers_sent=len(sent), layers_reused=len(layers) - len(sent),
                      bytes_sent=sum(size for _, size in sent), bytes_total=sum(size for _, size in layers))


def push_version(root: Path, vid: str, to: str, archive: Path | None = None, **kw) -> PushResult:
    lock = lockfile.read(project.lock_path(root, vid))
    dest = parse_destination(to, default_tag(vid, lock))
    return push(Path(archive) if archive else Path("result"), dest, **kw)
