"""Comfy Registry and model resolvers against a local HTTP server speaking the services' documented shapes.

Shapes follow:
- Comfy Registry API (https://api.comfy.org, https://docs.comfy.org/registry/api-reference):
  GET /nodes/{nodeId}/versions/{versionId} -> NodeVersion {id, version, downloadUrl, deprecated, status, ...};
  GET /nodes/{nodeId} -> Node {id, name, latest_version: NodeVersion, ...}.
- Hugging Face Hub API (https://huggingface.co/docs/hub/api, huggingface_hub HfApi.model_info / list_repo_tree):
  GET /api/models/{repo_id}/revision/{revision} -> {id, sha, ...};
  GET /api/models/{repo_id}/tree/{revision}/{path} -> [{type, oid, size, path, lfs: {oid, size, pointerSize}}].
- Civitai REST API v1 (https://developer.civitai.com/docs/api/public-rest):
  GET /api/v1/model-versions/{modelVersionId} and /api/v1/model-versions/by-hash/{hash}
  -> {id, modelId, name, files: [{name, sizeKB, type, primary, hashes: {SHA256, ...}, downloadUrl}]}.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.sources import modelsource, registry

NIX = ["nix", "--extra-experimental-features", "nix-command"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.fixture
def reg(http_server, monkeypatch):
    monkeypatch.setenv("COMFY_REGISTRY_URL", http_server.url)

    def publish(node_id, version, zip_bytes, **extra):
        (http_server.files_root / f"{node_id}-{version}.zip").write_bytes(zip_bytes)
        nv = {"id": f"{node_id}-{version}-uuid", "version": version, "changelog": "", "deprecated": False,
              "status": "NodeVersionStatusActive", "createdAt": "2026-01-01T00:00:00Z",
              "downloadUrl": f"{http_server.url}/{node_id}-{version}.zip", **extra}
        http_server.routes[f"/nodes/{node_id}/versions/{version}"] = nv
        http_server.routes[f"/nodes/{node_id}"] = {"id": node_id, "name": node_id, "latest_version": nv}
    return publish


def test_registry_lock_hash_matches_nix_of_unpacked_tree(tmp_path, reg, http_server):
    zb = make_zip([("__init__.py", b"NODE_CLASS_MAPPINGS = {}\n", 0o100644),
                   ("js/widget.js", b"//\n", 0o100644),
                   ("install.sh", b"#!/bin/sh\n", 0o100755)])
    reg("my-pack", "1.0.2", zb)
    locked = registry.lock({"type": "registry", "id": "my-pack", "version": "1.0.2"}, "nodes.my-pack")
    ref = tmp_path / "ref"
    zipfile.ZipFile(io.BytesIO(zb)).extractall(ref)
    (ref / "install.sh").chmod(0o755)
    expected = subprocess.run([*NIX, "hash", "path", str(ref)], capture_output=True, text=True, check=True).stdout.strip()
    assert locked == {"type": "zip", "url": f"{http_server.url}/my-pack-1.0.2.zip", "hash": expected,
                      "stripRoot": False, "version": "1.0.2"}
    assert not any("/install" in r["path"] for r in http_server.requests)
    # `latest` goes through GET /nodes/{id}
    assert registry.lock({"type": "registry", "id": "my-pack", "version": "latest"}, "t")["hash"] == expected


def test_registry_strips_a_single_root_folder(reg):
    reg("rooted", "2.0.0", make_zip([("rooted-2.0.0/", b"", 0o40755), ("rooted-2.0.0/__init__.py", b"x", 0o100644),
                                     ("rooted-2.0.0/a/b.py", b"y", 0o100644)]))
    assert registry.lock({"type": "registry", "id": "rooted", "version": "2.0.0"}, "t")["stripRoot"] is True


@pytest.mark.parametrize("entries, needle", [
    ([("ok.py", b"1", 0o100644), ("../../evil.py", b"pwn", 0o100644)], "escapes the target"),
    ([("/etc/cron.d/evil", b"pwn", 0o100644)], "escapes the target"),
    ([("C:/evil.txt", b"pwn", 0o100644)], "escapes the target"),
    ([("link", b"../../../etc/passwd", 0o120777)], "link out of the tree"),
    ([("link", b"/etc/passwd", 0o120777)], "link out of the tree"),
])
def test_registry_refuses_escaping_archives(tmp_path, reg, entries, needle):
    reg("evil", "6.6.6", make_zip(entries))
    with pytest.raises(ComfyverError) as e:
        registry.lock({"type": "registry", "id": "evil", "version": "6.6.6"}, "nodes.evil")
    assert needle in str(e.value) and "nodes.evil" in str(e.value)
    assert not (tmp_path / "evil.py").exists()


def test_registry_unknown_version_and_deprecated(reg, http_server):
    with pytest.raises(ComfyverError, match=r"HTTP 404.*\n.*hint"):
        registry.lock({"type": "registry", "id": "ghost", "version": "1.0.0"}, "nodes.ghost")
    reg("old", "0.1.0", make_zip([("a.py", b"", 0o100644)]), deprecated=True)
    with pytest.raises(ComfyverError, match="deprecated"):
        registry.lock({"type": "registry", "id": "old", "version": "0.1.0"}, "nodes.old")


def test_registry_answers_that_are_not_objects_are_errors_not_crashes(reg, http_server):
    http_server.routes["/nodes/odd/versions/1.0.0"] = [1, 2]
    http_server.routes["/nodes/odd"] = ["not", "a", "node"]
    for version in ("1.0.0", "latest"):
        with pytest.raises(ComfyverError, match="odd"):
            registry.lock({"type": "registry", "id": "odd", "version": version}, "nodes.odd")


@pytest.fixture
def hf(http_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    data = b"safetensors-bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    small = b'{"a": 1}'
    http_server.routes["/api/models/org/repo/revision/main"] = {"id": "org/repo", "sha": COMMIT}
    http_server.routes[f"/api/models/org/repo/tree/{COMMIT}/unet"] = [
        {"type": "file", "oid": "9" * 40, "size": len(data), "path": "unet/model.safetensors",
         "lfs": {"oid": sha, "size": len(data), "pointerSize": 134}},
        {"type": "file", "oid": "8" * 40, "size": len(small), "path": "unet/config.json"},
    ]
    http_server.routes[f"/org/repo/resolve/{COMMIT}/unet/config.json"] = small
    return data, sha, small


def test_hf_lfs_file_locks_without_download(hf, http_server):
    data, sha, _ = hf
    locked = modelsource.lock({"url": "hf://org/repo/unet/model.safetensors"}, "models.unet/x")
    assert locked == {"url": f"{http_server.url}/org/repo/resolve/{COMMIT}/unet/model.safetensors",
                      "sha256": sha, "size": len(data), "auth": "hf"}
    assert not any("/resolve/" in r["path"] for r in http_server.requests)


def test_hf_plain_git_file_is_downloaded_and_hashed(hf):
    _, _, small = hf
    locked = modelsource.lock({"url": "hf://org/repo@main/unet/config.json"}, "t")
    assert locked["sha256"] == hashlib.sha256(small).hexdigest() and locked["size"] == len(small)


def test_hf_token_sent_as_header_only_to_hf_and_never_leaks(hf, http_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_SuperSecretToken123")
    locked = modelsource.lock({"url": "hf://org/repo/unet/model.safetensors"}, "t")
    assert "hf_SuperSecretToken123" not in json.dumps(locked)
    assert any(r["headers"].get("Authorization") == "Bearer hf_SuperSecretToken123" for r in http_server.requests)
    # another host never sees it
    from tests.support.httpserver import HTTPServer

    other = HTTPServer(tmp_path)
    try:
        (tmp_path / "m.bin").write_bytes(b"m")
        modelsource.lock({"url": f"{other.url}/m.bin"}, "t")
        assert all("Authorization" not in r["headers"] for r in other.requests)
    finally:
        other.close()


def test_hf_401_error_names_token_variable(hf, http_server):
    http_server.routes["/api/models/org/gated/revision/main"] = lambda h, b: (401, {}, {"error": "gated"})
    with pytest.raises(ComfyverError) as e:
        modelsource.lock({"url": "hf://org/gated/x.safetensors"}, "models.loras/x.safetensors")
    assert "models.loras/x.safetensors" in str(e.value) and "HF_TOKEN" in str(e.value)


@pytest.fixture
def civitai(http_server, monkeypatch):
    monkeypatch.setenv("CIVITAI_ENDPOINT", http_server.url)
    data = b"lora-bytes" * 333
    sha = hashlib.sha256(data).hexdigest()
    version = {"id": 4242, "modelId": 7, "name": "v1.0", "files": [
        {"name": "style.safetensors", "sizeKB": len(data) / 1024, "type": "Model", "primary": True,
         "hashes": {"AutoV2": sha[:10].upper(), "SHA256": sha.upper()},
         "downloadUrl": f"{http_server.url}/api/download/models/4242"}]}
    http_server.routes["/api/v1/model-versions/4242"] = version
    http_server.routes[f"/api/v1/model-versions/by-hash/{sha.upper()}"] = version
    http_server.routes["/api/download/models/4242"] = data
    return data, sha


def test_civitai_by_version_and_by_hash(civitai, http_server, monkeypatch):
    data, sha = civitai
    monkeypatch.setenv("CIVITAI_TOKEN", "civ_secret_987")
    a = modelsource.lock({"url": "civitai://4242"}, "t")
    b = modelsource.lock({"url": f"civitai://sha256/{sha}"}, "t")
    expected = {"url": f"{http_server.url}/api/download/models/4242", "sha256": sha, "size": len(data), "auth": "civitai"}
    assert a == b == expected
    assert "civ_secret_987" not in json.dumps(a)
    assert not any(r["method"] == "GET" and r["path"].startswith("/api/download") for r in http_server.requests)


def test_http_and_file_models_are_downloaded_and_hashed(tmp_path, http_server):
    data = os.urandom(300_000)
    (http_server.files_root / "vae.safetensors").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert modelsource.lock({"url": f"{http_server.url}/vae.safetensors"}, "t") == {
        "url": f"{http_server.url}/vae.safetensors", "sha256": sha, "size": len(data)}
    f = tmp_path / "local.bin"
    f.write_bytes(data)
    assert modelsource.lock({"url": f"file://{f}"}, "t")["sha256"] == sha
    # the downloaded bytes land in the content-addressed model cache
    from comfyver.base import project

    assert (project.cache_dir() / "models" / "sha256" / sha).read_bytes() == data
    with pytest.raises(ComfyverError, match="sha256 mismatch"):
        modelsource.lock({"url": f"{http_server.url}/vae.safetensors", "sha256": "0" * 64}, "models.vae/x")


@pytest.mark.parametrize("url", ["ftp://host/x.bin", "javascript:alert(1)", "hf://no-path", "civitai://abc",
                                 "s3://bucket/key"])
def test_unexpected_model_urls_refused(url):
    with pytest.raises(ComfyverError):
        modelsource.lock({"url": url}, "t")


def test_model_404_names_input(http_server):
    with pytest.raises(ComfyverError) as e:
        modelsource.lock({"url": f"{http_server.url}/missing.bin"}, "models.vae/missing.bin")
    assert "models.vae/missing.bin" in str(e.value) and "404" in str(e.value)


def test_gs_model_from_gcs_emulator(gcs_emulator):
    """gs:// through google-cloud-storage against a real GCS emulator."""
    data = b"gcs-model" * 1000
    gcs_emulator.bucket().blob("sdxl/model.safetensors").upload_from_string(data)
    locked = modelsource.lock({"url": "gs://models/sdxl/model.safetensors"}, "t")
    assert locked == {"url": "gs://models/sdxl/model.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
                      "size": len(data), "auth": "gcs"}


def test_corrupt_archive_entry_is_a_clear_error(tmp_path):
    from comfyver.sources import archive

    zb = bytearray(make_zip([("a.py", b"print('hello world')\n" * 50, 0o100644)]))
    at = zb.find(b"print")  # stored uncompressed: flip a byte of the payload -> CRC mismatch
    zb[at] ^= 0xFF
    z = tmp_path / "bad.zip"
    z.write_bytes(bytes(zb))
    with pytest.raises(ComfyverError, match=r"'a.py' is corrupt"):
        archive.extract_zip(z, tmp_path / "out", strip_root=False, what="nodes.bad")
    assert not (tmp_path / "out").exists()
