"""What `run` and the `comfyver ui` page (jobclient.save_outputs) do with a job's result, which the worker writes:
names, URLs, buckets and errors from it are untrusted (issue 24 L6-L9)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.cli import main
from comfyver.ship import jobclient

from tests.support.httpserver import HTTPServer
from tests.test_jobclient import PNG, FakeQueue, runpod_api, workflow  # noqa: F401 - fixtures


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------ L6: every output its own file, listed once
def test_renamed_duplicates_never_overwrite_and_are_listed_once(tmp_path):
    entries = [{"node_id": "9", "filename": "a.png", "data": b64(b"one")},
               {"node_id": "Q", "filename": "Q-2-a.png", "data": b64(b"two")},  # the name the next one was given
               {"node_id": "Q", "filename": "a.png", "data": b64(b"three")},
               {"node_id": "7", "filename": "A.PNG", "data": b64(b"four")},  # one file on a case-folding disk
               {"node_id": "7", "filename": "b.png.part", "data": b64(b"five")},  # b.png's download file
               {"node_id": "7", "filename": "b.png", "data": b64(b"six")}]
    saved = jobclient.save_outputs({"outputs": entries}, tmp_path)
    paths = [s["path"] for s in saved]
    assert len(paths) == len({p.casefold() for p in paths}) == 6
    assert [Path(p).read_bytes() for p in paths] == [b"one", b"two", b"three", b"four", b"five", b"six"]
    assert not any(Path(p).name.casefold() == f"{Path(q).name}.part".casefold() for p in paths for q in paths)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(Path(p).name for p in paths)


# ------------------------------------------------------------------ L8: a long name is shortened, not fatal
def test_an_over_long_name_is_shortened_and_every_output_saved(tmp_path):
    long = "x" * 300
    entries = [{"node_id": "9", "filename": f"{long}.png", "data": b64(b"one")},
               {"node_id": "9", "filename": f"{long}.png", "data": b64(b"two")},
               {"node_id": "9" * 300, "text": "hello"},
               {"node_id": "9", "filename": "ok.png", "data": b64(b"three")}]
    saved = jobclient.save_outputs({"outputs": entries}, tmp_path)
    names = [Path(s["path"]).name for s in saved]
    assert len(saved) == 4 and len(set(names)) == 4
    assert all(len(n.encode()) <= jobclient.MAX_NAME for n in names)
    assert names[0].endswith(".png") and names[1].endswith(".png") and names[2].endswith(".txt")
    assert [Path(s["path"]).read_bytes() for s in saved] == [b"one", b"two", b"hello", b"three"]


# ------------------------------------------------------------------ L7: a result's URLs go to public hosts only
@pytest.fixture
def other_server(tmp_path):
    srv = HTTPServer(tmp_path)
    (tmp_path / "secret.png").write_bytes(b"local secret")
    yield srv
    srv.close()


def test_a_result_url_on_this_machine_is_refused(other_server, tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYVER_TRUSTED_HOSTS", raising=False)
    for url in (f"{other_server.url}/secret.png", f"http://localhost:{other_server.port}/secret.png"):
        with pytest.raises(ComfyverError, match="local, private or metadata address") as exc:
            jobclient.save_outputs({"outputs": [{"node_id": "9", "filename": "s.png", "url": url}]}, tmp_path / "out")
        assert "COMFYVER_TRUSTED_HOSTS" in exc.value.hint and "'s.png' of node 9" in exc.value.message
    assert other_server.requests == [] and not list((tmp_path / "out").iterdir())


def test_a_redirect_to_this_machine_is_refused(http_server, other_server, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", f"127.0.0.1:{http_server.port}")  # plays a public host
    http_server.routes["/out.png"] = lambda h, b: (302, {"Location": f"{other_server.url}/secret.png"}, b"")
    with pytest.raises(ComfyverError, match="redirects to"):
        jobclient.save_outputs({"outputs": [{"node_id": "9", "filename": "s.png",
                                             "url": f"{http_server.url}/out.png"}]}, tmp_path / "out")
    assert other_server.requests == [] and not list((tmp_path / "out").iterdir())


def test_buckets_are_read_with_your_keys_only_when_you_named_them(http_server, tmp_path, monkeypatch):
    """An s3:// or gs:// result is fetched with this machine's keys only from the bucket configured for delivery
    (BUCKET_NAME, GCS_BUCKET); here every storage request would reach the recording server."""
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", http_server.url)
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "AKIAUSERKEY")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "user-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", http_server.url)
    monkeypatch.setenv("BUCKET_NAME", "my-out")
    monkeypatch.delenv("GCS_BUCKET", raising=False)
    for url, env in (("s3://someone-else/k.png", "BUCKET_NAME"), ("gs://someone-else/k.png", "GCS_BUCKET")):
        with pytest.raises(ComfyverError, match="someone-else") as exc:
            jobclient.save_outputs({"outputs": [{"node_id": "9", "filename": "k.png", "url": url}]}, tmp_path)
        assert f"{env}=someone-else" in exc.value.hint
    assert http_server.requests == []



def test_a_stale_partial_download_of_another_job_is_never_resumed(other_server, tmp_path, monkeypatch):
    """Review of issue 24: `ComfyUI_00001_.png` repeats across jobs and `run`'s --out is the same folder; a
    `.part` left by an interrupted run was resumed (HTTP Range) into the new job's image, or made its bytes."""
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", f"127.0.0.1:{other_server.port}")  # plays a public host
    (tmp_path / "new.png").write_bytes(b"NEW-JOB-IMAGE-BYTES-0123456789")  # other_server serves tmp_path
    out = tmp_path / "out"
    out.mkdir()
    for stale in (b"OLD-JOB-IMAGE", b"OLD-JOB-IMAGE-BYTES-0123456789-AND-MORE"):
        (out / "ComfyUI_00001_.png.part").write_bytes(stale)
        [saved] = jobclient.save_outputs({"outputs": [{"node_id": "9", "filename": "ComfyUI_00001_.png",
                                                       "url": f"{other_server.url}/new.png"}]}, out)
        assert Path(saved["path"]).read_bytes() == b"NEW-JOB-IMAGE-BYTES-0123456789"
        assert sorted(f.name for f in out.iterdir()) == ["ComfyUI_00001_.png"]

# ------------------------------------------------------------------ L9: a worker's error is masked
@pytest.mark.parametrize("as_json", [False, True])
def test_a_workers_error_is_printed_masked(runpod_api, tmp_path, capsys, as_json):
    key = "rpa_JOBKEY_123456"  # RUNPOD_API_KEY in the runpod_api fixture
    FakeQueue(runpod_api, [{"status": "FAILED", "error": json.dumps(
        {"kind": "execution", "message": f"node said: bad key {key}", "hint": f"unset {key}", "node_id": "3"})}])
    rc = main(["run", "--endpoint", "ep1", str(workflow(tmp_path)), "--poll", "0.01"] + (["--json"] if as_json else []))
    cap = capsys.readouterr()
    assert rc == 1
    assert key not in cap.out + cap.err
    assert "node said: bad key ***" in cap.out + cap.err
