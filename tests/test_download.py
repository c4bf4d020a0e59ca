"""Downloads against a real local HTTP server: resume after a dropped connection, retries, verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.sources import download, schemes


def test_dropped_connection_resumes_with_range(tmp_path, http_server):
    data = os.urandom(3_000_000)
    (http_server.files_root / "big.bin").write_bytes(data)
    http_server.httpd.cut_after = 2_500_000  # the first answer stops after 2 of its 1 MiB chunks have landed
    dest = tmp_path / "big.bin"
    got = download.download(f"{http_server.url}/big.bin", dest, sha256=hashlib.sha256(data).hexdigest(),
                            size=len(data), what="models.x")
    assert got == hashlib.sha256(data).hexdigest() and dest.read_bytes() == data
    ranges = [r["headers"].get("Range") for r in http_server.requests]
    assert ranges[0] is None and ranges[-1] and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-"
    assert not (tmp_path / "big.bin.part").exists()


def test_5xx_is_retried_404_is_not(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(schemes.time, "sleep", lambda s: None)  # the http fetch function's retry pause
    calls = {"n": 0}

    def flaky(handler, body):
        calls["n"] += 1
        return (503, {}, b"busy") if calls["n"] < 3 else (200, {}, b"payload")

    http_server.routes["/flaky.bin"] = flaky
    assert download.download(f"{http_server.url}/flaky.bin", tmp_path / "f") == hashlib.sha256(b"payload").hexdigest()
    assert calls["n"] == 3
    before = len(http_server.requests)
    with pytest.raises(ComfyverError, match="HTTP 404"):
        download.download(f"{http_server.url}/missing.bin", tmp_path / "m", what="models.m")
    assert len(http_server.requests) == before + 1
    assert not (tmp_path / "m").exists()


def test_wrong_bytes_leave_nothing_behind(tmp_path, http_server):
    (http_server.files_root / "m.bin").write_bytes(b"not what was locked")
    dest = tmp_path / "store" / "m.bin"
    with pytest.raises(ComfyverError, match="sha256 mismatch"):
        download.download(f"{http_server.url}/m.bin", dest, sha256="0" * 64, what="models.m")
    assert list(dest.parent.iterdir()) == []


def test_unexpected_scheme_refused(tmp_path):
    with pytest.raises(ComfyverError, match="not allowed"):
        download.download("ftp://example.com/x.bin", tmp_path / "x")


def test_download_stops_at_the_locked_size(tmp_path, http_server):
    """A server sending more than the lock's size is cut off at that size, not read to the end (disk-filling)."""
    (http_server.files_root / "huge.bin").write_bytes(os.urandom(5_000_000))
    dest = tmp_path / "store" / "m.bin"
    with pytest.raises(ComfyverError, match="more than the locked 1000 bytes"):
        download.download(f"{http_server.url}/huge.bin", dest, sha256="0" * 64, size=1000, what="models.m")
    assert list(dest.parent.iterdir()) == []


def test_a_wrong_size_in_a_lock_never_deletes_the_right_blob(tmp_path, http_server):
    """The blob is named by its sha256: when its bytes hash to that name, the lock's size is what is wrong."""
    from comfyver.sources import modelstore

    data = b"the real model bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    store = tmp_path / "store"
    (http_server.files_root / "m.bin").write_bytes(data)
    good = {"url": f"{http_server.url}/m.bin", "sha256": sha, "size": len(data)}
    blob = modelstore.ensure(store, "loras/m.bin", good)
    with pytest.raises(ComfyverError, match="the lock's size is wrong"):
        modelstore.ensure(store, "loras/m.bin", {**good, "size": len(data) + 1})
    assert blob.read_bytes() == data  # another version's tree still has its model
    # a blob whose bytes really are wrong is still replaced
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" * len(data))
    assert modelstore.ensure(store, "loras/m.bin", good).read_bytes() == data


def served_model(tmp_path, http_server) -> tuple[bytes, str, Path]:
    """A model file served at <http_server>/m.bin: its bytes, their sha256, and an empty model store."""
    data = b"the real model bytes" * 100
    store = tmp_path / "store"
    (store / "sha256").mkdir(parents=True)
    (http_server.files_root / "m.bin").write_bytes(data)
    return data, hashlib.sha256(data).hexdigest(), store


@pytest.mark.parametrize("target_bytes", [b"private, not the model", b"the real model bytes" * 100])
def test_a_link_planted_in_the_store_is_never_followed(tmp_path, http_server, target_bytes):
    """A symlink where a blob belongs is replaced by the verified blob; what it points at keeps its mode and
    bytes, whether or not they hash to the blob's name (issue 24 M3)."""
    from comfyver.sources import modelstore

    data, sha, store = served_model(tmp_path, http_server)
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(target_bytes)
    os.chmod(target, 0o600)
    (store / "sha256" / sha).symlink_to(target)
    blob = modelstore.ensure(store, "loras/m.bin", {"url": f"{http_server.url}/m.bin", "sha256": sha, "size": len(data)})
    assert not blob.is_symlink() and blob.read_bytes() == data
    assert target.read_bytes() == target_bytes and target.stat().st_mode & 0o777 == 0o600


def test_a_link_planted_as_a_partial_download_is_never_written_through(tmp_path, http_server):
    """A `<blob>.part` symlink is not resumed into (nor read, nor chmod-ed): what it points at stays as it was,
    and the blob arrives whole (issue 24 M3)."""
    from comfyver.sources import modelstore

    data, sha, store = served_model(tmp_path, http_server)
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"private")
    os.chmod(target, 0o600)
    (store / "sha256" / f"{sha}.part").symlink_to(target)
    blob = modelstore.ensure(store, "loras/m.bin", {"url": f"{http_server.url}/m.bin", "sha256": sha, "size": len(data)})
    assert blob.read_bytes() == data
    assert target.read_bytes() == b"private" and target.stat().st_mode & 0o777 == 0o600
