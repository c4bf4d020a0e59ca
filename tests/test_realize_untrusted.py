"""Models a workflow named are fetched at realize time (and by the handler's run-time realize, which calls it)
the way `lock` fetched them: public addresses only, every redirect hop checked, and a mismatch error that
repeats nothing of what the server answered (issue 24 L1)."""

from __future__ import annotations

import hashlib
import socket

import pytest
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError
from comfyver.realize import realize
from comfyver.sources import modelstore

DATA = b"the locked model bytes" * 1000
KEY = "checkpoints/m.safetensors"


@pytest.fixture
def mirror(http_server, monkeypatch):
    """`mirror.test` (a trusted host: it plays a public one) is this machine's file server."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "mirror.test" else host, *a, **k))
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "mirror.test")
    http_server.base = f"http://mirror.test:{http_server.port}"
    return http_server


def lock_with(url: str, named_by_workflow: bool) -> dict:
    model = {"original": {"url": url}, "locked": {"url": url, "sha256": hashlib.sha256(DATA).hexdigest(),
                                                  "size": len(DATA)}}
    if named_by_workflow:
        model["from"] = "workflow"
    lock = lockfile.empty("demo", {"type": "git", "url": "https://example.com/ComfyUI"},
                          {"type": "git", "url": "https://example.com/ComfyUI", "rev": "a" * 40,
                           "hash": "sha256-" + "A" * 43 + "=", "submodules": False})
    lock["models"][KEY] = model
    return lockfile.validate(lock, "version.json")


def ensure_models(lock: dict, tmp_path):
    return realize.ensure_models(lock, tmp_path / "store", False, realize.Reporter(), modelstore.StatCache())


def test_a_workflow_models_redirect_to_this_machine_is_refused_at_realize(mirror, tmp_path):
    (mirror.files_root / "real.bin").write_bytes(DATA)
    mirror.routes["/m.safetensors"] = lambda h, b: (302, {"Location": f"http://127.0.0.1:{mirror.port}/real.bin"}, b"")
    with pytest.raises(ComfyverError, match="local or private") as exc:
        ensure_models(lock_with(f"{mirror.base}/m.safetensors", named_by_workflow=True), tmp_path)
    assert KEY in exc.value.message
    assert not any(r["path"] == "/real.bin" for r in mirror.requests)
    # the same URL given by the user (no `from`) may redirect where it likes
    assert ensure_models(lock_with(f"{mirror.base}/m.safetensors", named_by_workflow=False), tmp_path)[KEY].read_bytes() == DATA


@pytest.mark.parametrize("same_size", [True, False], ids=["sha256-differs", "size-differs"])
def test_a_workflow_models_mismatch_error_repeats_nothing_of_the_answer(mirror, tmp_path, same_size):
    other = b"x" * 12345  # what the server answers instead of the locked bytes
    (mirror.files_root / "m.safetensors").write_bytes(other)
    lock = lock_with(f"{mirror.base}/m.safetensors", named_by_workflow=True)
    if same_size:
        lock["models"][KEY]["locked"]["size"] = len(other)  # then the sha256 check speaks
    with pytest.raises(ComfyverError) as exc:
        ensure_models(lock, tmp_path)
    text = exc.value.message + (exc.value.hint or "")
    assert KEY in text and "mismatch" in text and "comfyver update" in text
    assert hashlib.sha256(other).hexdigest() not in text
    assert same_size or "12345" not in text


def test_a_workflow_model_may_only_be_fetched_over_http(tmp_path):
    src = tmp_path / "local.bin"
    src.write_bytes(DATA)
    with pytest.raises(ComfyverError, match="may not name a file://"):
        ensure_models(lock_with(src.as_uri(), named_by_workflow=True), tmp_path)
