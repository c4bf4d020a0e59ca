"""`comfyver models sync`: a version's models into a content-addressed store, from HTTP or from a folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import pytest
from comfyver.base import lockfile, project
from comfyver.cli import main
from comfyver.realize import realize, verify
from comfyver.sources import modelstore

from tests.test_realize_helpers import make_project, model_gets

A, B = "checkpoints/a.safetensors", "loras/sub/b.safetensors"


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


@pytest.fixture
def proj(tmp_path, git_server, http_server):
    return make_project(tmp_path, git_server, http_server, models={A: os.urandom(3_500_000), B: os.urandom(700_000)})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sync(capsys, proj, *args) -> tuple[int, dict | None, str]:
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--json", *args])
    out, err = capsys.readouterr()
    if rc != 0:
        return rc, None, err
    [target] = json.loads(out)["targets"]
    return rc, target, err


def test_sync_to_a_volume_from_http_then_nothing_to_do(proj, tmp_path, http_server, capsys):
    vol = tmp_path / "runpod-volume" / "models"
    rc, out, err = sync(capsys, proj, "--to", str(vol))
    assert rc == 0, err
    assert out["models"] == {A: "downloaded", B: "downloaded"}
    for _key, data in proj.model_bytes.items():
        blob = vol / "sha256" / sha(data)
        assert blob.read_bytes() == data
        assert not os.access(blob, os.W_OK) or os.geteuid() == 0  # blobs are stored read-only
        assert oct(blob.stat().st_mode & 0o777) == "0o444"
    assert not list(vol.rglob("*.part"))
    gets = len(http_server.requests)
    rc, out, _ = sync(capsys, proj, "--to", str(vol))
    assert out["models"] == {A: "present", B: "present"} and len(http_server.requests) == gets
    # realize reads the synced store: no model request at all
    into = realize.realize(proj.root, proj.vid, tmp_path / "out", models_dir=vol)
    assert len(http_server.requests) == gets
    assert (into / "models" / A).resolve() == (vol / "sha256" / sha(proj.model_bytes[A])).resolve()
    assert verify.verify(proj.root, proj.vid, into) == []


def test_seed_from_a_folder_copies_only_matching_files(proj, tmp_path, http_server, capsys):
    have = tmp_path / "old-comfyui" / "models"
    (have / A).parent.mkdir(parents=True)
    (have / A).write_bytes(proj.model_bytes[A])
    (have / B).parent.mkdir(parents=True)
    (have / B).write_bytes(b"not the locked bytes")
    vol = tmp_path / "vol"
    rc, _, err = sync(capsys, proj, "--to", str(vol), "--from", str(have), "--offline")
    assert rc == 1
    assert f"model {B}: not in the model store" in err and "--offline" in err
    assert (vol / "sha256" / sha(proj.model_bytes[A])).read_bytes() == proj.model_bytes[A]
    assert model_gets(http_server, proj.model_url_path[A]) == []
    rc, out, err = sync(capsys, proj, "--to", str(vol), "--from", str(have))
    assert rc == 0, err
    assert out["models"] == {A: "present", B: "downloaded"}
    assert model_gets(http_server, proj.model_url_path[A]) == []
    assert len(model_gets(http_server, proj.model_url_path[B])) == 1


def test_seed_from_another_store(proj, tmp_path, http_server, capsys):
    first = tmp_path / "first"
    assert sync(capsys, proj, "--to", str(first))[0] == 0
    gets = len(http_server.requests)
    rc, out, _ = sync(capsys, proj, "--to", str(tmp_path / "second"), "--from", str(first), "--offline")
    assert rc == 0 and out["models"] == {A: "copied", B: "copied"}
    assert len(http_server.requests) == gets


def test_interrupted_sync_resumes_with_a_range_request(proj, tmp_path, http_server):
    lock = lockfile.read(project.lock_path(proj.root, proj.vid))
    store = tmp_path / "vol"

    @contextlib.contextmanager
    def stop_after_first_chunk(key, size):
        def progress(n):
            if key == A:
                raise KeyboardInterrupt  # as if the pod was stopped mid-download
        yield progress

    with pytest.raises(KeyboardInterrupt):
        modelstore.sync(lock, store, progress_for=stop_after_first_chunk)
    part = store / "sha256" / (sha(proj.model_bytes[A]) + ".part")
    have = part.stat().st_size
    assert 0 < have < len(proj.model_bytes[A])
    assert not (store / "sha256" / sha(proj.model_bytes[A])).exists()  # never a partial blob under its name
    done = modelstore.sync(lock, store)
    assert done[A] == "downloaded"
    last = model_gets(http_server, proj.model_url_path[A])[-1]
    assert last["headers"].get("Range") == f"bytes={have}-"
    assert (store / "sha256" / sha(proj.model_bytes[A])).read_bytes() == proj.model_bytes[A]
    assert not part.exists()


def test_connection_cut_mid_download_is_resumed_in_the_same_run(proj, tmp_path, http_server, capsys):
    http_server.httpd.cut_after = 2_500_000  # the server drops the connection after 2.5 MB of model A
    rc, _out, err = sync(capsys, proj, "--to", str(tmp_path / "vol"))
    assert rc == 0, err
    ranged = [r for r in http_server.requests if r["headers"].get("Range")]
    assert len(ranged) == 1
    start = int(ranged[0]["headers"]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 2_500_000  # only the missing tail was asked for
    for _key, data in proj.model_bytes.items():
        assert (tmp_path / "vol" / "sha256" / sha(data)).read_bytes() == data


def test_missing_from_folder_is_a_usage_error(proj, tmp_path, capsys):
    rc, _, err = sync(capsys, proj, "--from", str(tmp_path / "nope"))
    assert rc == 2 and "--from" in err and "nope" in err


def test_file_urls_are_a_source_too(tmp_path, git_server, http_server, capsys):
    data = os.urandom(123_456)
    src = tmp_path / "local models" / "c.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    proj = make_project(tmp_path, git_server, http_server, models={})
    url = src.as_uri()
    proj.lock["models"]["checkpoints/c.bin"] = {"original": {"url": url},
                                                "locked": {"url": url, "sha256": sha(data), "size": len(data)}}
    lockfile.write(proj.vdir / "version.json", proj.lock)
    rc, out, err = sync(capsys, proj, "--to", str(tmp_path / "vol"))
    assert rc == 0, err
    assert out["models"] == {"checkpoints/c.bin": "downloaded"}
    assert (tmp_path / "vol" / "sha256" / sha(data)).read_bytes() == data


def test_gs_urls_from_a_gcs_emulator(tmp_path, git_server, http_server, gcs_emulator, capsys):
    data = os.urandom(200_000)
    gcs_emulator.bucket().blob("vae/v.safetensors").upload_from_string(data)
    proj = make_project(tmp_path, git_server, http_server, models={})
    url = "gs://models/vae/v.safetensors"
    proj.lock["models"]["vae/v.safetensors"] = {
        "original": {"url": url}, "locked": {"url": url, "sha256": sha(data), "size": len(data), "auth": "gcs"}}
    lockfile.write(proj.vdir / "version.json", proj.lock)
    rc, _out, err = sync(capsys, proj, "--to", str(tmp_path / "vol"))
    assert rc == 0, err
    assert (tmp_path / "vol" / "sha256" / sha(data)).read_bytes() == data
