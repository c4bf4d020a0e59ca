"""Comfy Registry nodes: `id@version` -> locked zip {url, hash (NAR of unpacked tree), stripRoot}.

API (https://api.comfy.org, docs: https://docs.comfy.org/registry/api-reference):
  GET /nodes/{id}/versions/{version} -> NodeVersion {version, downloadUrl, deprecated, status, ...}
  GET /nodes/{id}                    -> Node {latest_version: NodeVersion, ...}   (for `latest`)
  GET /nodes/{id}/versions           -> [NodeVersion] (lock/fit.py: earlier versions that may fit the core)
We never call `/install`: that endpoint counts installs and may redirect.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from comfyver.base import nar, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import RegistryOriginal, ZipLocked
from comfyver.sources import archive, download, resolvecache

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _version_info(node_id: str, version: str, what: str) -> Any:
    """The registry's NodeVersion (JSON, read key by key) of `version`; for `latest`, the node's latest_version."""
    base = web.registry_endpoint()
    node: Any
    info: Any
    if version == "latest":
        _, node = web.get_json(f"{base}/nodes/{quote(node_id)}", what=what)
        info = node.get("latest_version") if isinstance(node, dict) else None
        if not isinstance(info, dict) or not info:
            raise ComfyverError(f"{what}: the Comfy Registry lists no published version of {node_id!r}")
        return info
    _, info = web.get_json(f"{base}/nodes/{quote(node_id)}/versions/{quote(version, safe='')}", what=what)
    return info if isinstance(info, dict) else {}  # a body that is not an object says nothing


@dataclass(frozen=True)
class Published:
    """One published version of a registry node, as `GET /nodes/{id}/versions` lists it."""
    version: str
    deprecated: bool
    supported_comfyui: str | None   # the registry's supported_comfyui_version (a specifier such as ">=0.3.40"), if any


def published(node_id: str, what: str) -> list[Published]:
    """The node's active versions (`GET /nodes/{id}/versions?statuses=NodeVersionStatusActive`), as listed."""
    if not ID_RE.match(node_id):
        raise UsageError(f"{what}: {node_id!r} is not a Comfy Registry node id")
    _, got = web.get_json(f"{web.registry_endpoint()}/nodes/{quote(node_id)}/versions?statuses=NodeVersionStatusActive",
                          what=what)
    out = []
    for v in got if isinstance(got, list) else []:
        if isinstance(v, dict) and isinstance(v.get("version"), str) and v.get("status", "NodeVersionStatusActive") \
                == "NodeVersionStatusActive":
            spec = v.get("supported_comfyui_version")
            out.append(Published(v["version"], v.get("deprecated", False) is not False,
                                 spec if isinstance(spec, str) and spec else None))
    return out


def unpack_and_hash(zip_path: Path, what: str, strip: bool | None = None) -> tuple[str, bool]:
    """NAR hash of the unpacked archive and whether a single root folder was stripped (`strip`: decided by the
    caller; None: stripped when the archive has a single root folder, as registry archives are)."""
    if strip is None:
        with zipfile.ZipFile(zip_path) as zf:
            strip = archive.has_single_root(zf.namelist())
    tmp = Path(tempfile.mkdtemp(prefix="comfyver-zip-"))
    try:
        archive.extract_zip(zip_path, tmp / "out", strip_root=strip, what=what)
        return nar.to_sri(nar.nar_hash(tmp / "out")), strip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lock(original: RegistryOriginal, what: str) -> ZipLocked:
    node_id, version = original["id"], original["version"]
    if not ID_RE.match(node_id):
        raise UsageError(f"{what}: {node_id!r} is not a Comfy Registry node id")
    info = _version_info(node_id, version, what)
    url = info.get("downloadUrl")
    resolved_version = info.get("version") or version
    if not url:
        raise ComfyverError(f"{what}: the Comfy Registry gave no downloadUrl for {node_id}@{version}")
    web.check_scheme(url, ("https", "http", "file"), what)
    if info.get("deprecated"):
        raise ComfyverError(f"{what}: {node_id}@{resolved_version} is deprecated in the Comfy Registry",
                            hint="pick another version")
    hit = resolvecache.get("registry", node_id, resolved_version, url)
    if hit:
        return cast(ZipLocked, hit)
    with tempfile.TemporaryDirectory(prefix="comfyver-reg-") as tmp:
        z = Path(tmp) / "node.zip"
        download.download(url, z, what=what)
        sri, strip = unpack_and_hash(z, what)
    locked: ZipLocked = {"type": "zip", "url": url, "hash": sri, "stripRoot": strip, "version": resolved_version}
    return resolvecache.put(locked, "registry", node_id, resolved_version, url)
