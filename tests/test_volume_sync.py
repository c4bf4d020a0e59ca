"""`comfyver models sync|ls|verify` with runpod:// volumes: two datacenters, each a real moto S3 server (one checks
keys), RunPod's REST API as a recording server for the volume lookups, and a TCP proxy that counts (and can slow)
the bytes sent to a datacenter."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from comfyver.cli import main

from tests.support.httpserver import HTTPServer
from tests.support.s3volume import MotoDatacenter
from tests.support.tcpproxy import TCPProxy
from tests.test_realize_helpers import make_project

BIG, SMALL = "checkpoints/big.safetensors", "loras/small.safetensors"
API_KEY = "rpa_TESTKEY_must_not_leak"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("COMFYVER_MODELS", str(tmp_path / "local-store"))


@pytest.fixture
def dcs(tmp_path, monkeypatch):
    """EU-RO-1 (checks keys, behind a counting proxy) holding volume `vol1eu`; US-KS-2 holding `vol2us`."""
    eu = MotoDatacenter("EU-RO-1", ["vol1eu"], tmp_path / "moto-eu.log")
    us = MotoDatacenter("US-KS-2", ["vol2us"], tmp_path / "moto-us.log", check_keys=False)
    proxy = TCPProxy(eu.port)
    rest = HTTPServer()
    rest.routes["/v1/networkvolumes/vol1eu"] = {"id": "vol1eu", "name": "eu", "size": 50, "dataCenterId": "EU-RO-1"}
    rest.routes["/v1/networkvolumes/vol2us"] = {"id": "vol2us", "name": "us", "size": 50, "dataCenterId": "US-KS-2"}
    rest.routes["/v1/networkvolumes/vol3tx"] = {"id": "vol3tx", "name": "tx", "size": 50, "dataCenterId": "US-TX-3"}
    monkeypatch.setenv("RUNPOD_REST_URL", rest.url + "/v1")
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("COMFYVER_RUNPOD_S3_ENDPOINTS", f"EU-RO-1={proxy.url},US-KS-2={us.url}")
    monkeypatch.setenv("RUNPOD_S3_ACCESS_KEY", eu.key)
    monkeypatch.setenv("RUNPOD_S3_SECRET_KEY", eu.secret)
    yield {"eu": eu, "us": us, "proxy": proxy, "rest": rest}
    for x in (eu, us, proxy, rest):
        x.stop() if hasattr(x, "stop") else x.close()


@pytest.fixture
def proj(tmp_path, git_server, http_server):
    return make_project(tmp_path, git_server, http_server,
                        models={BIG: os.urandom(12 << 20), SMALL: os.urandom(700_000)})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cli(capsys, proj, *args) -> tuple[int, dict | None, str]:
    rc = main(["--root", str(proj.root), "models", *args, "--json"])
    out, err = capsys.readouterr()
    try:
        return rc, json.loads(out), err
    except ValueError:
        return rc, None, out + err


def objects(dc, bucket):
    c = dc.client()
    return {o["Key"]: c.head_object(Bucket=bucket, Key=o["Key"])
            for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_cold_sync_to_two_datacenters_then_warm_sends_nothing(proj, dcs, capsys, http_server):
    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol1eu", "--to", "runpod://vol2us",
                       "--part-size", "5")
    assert rc == 0, err
    total = sum(len(b) for b in proj.model_bytes.values())
    assert [t["target"] for t in out["targets"]] == ["runpod://vol1eu", "runpod://vol2us"]
    assert [t["datacenter"] for t in out["targets"]] == ["EU-RO-1", "US-KS-2"]
    for t in out["targets"]:
        assert t["models"] == {BIG: "uploaded", SMALL: "uploaded"}
        assert t["bytes_sent"] == total and t["bytes_skipped"] == 0 and t["verified"] == 2
    # the layout the handler reads with the volume at /runpod-volume and MODELS_DIR=/runpod-volume/models
    for dc, bucket in ((dcs["eu"], "vol1eu"), (dcs["us"], "vol2us")):
        got = objects(dc, bucket)
        assert set(got) == {f"models/sha256/{sha(b)}" for b in proj.model_bytes.values()}
        for data in proj.model_bytes.values():
            head = got[f"models/sha256/{sha(data)}"]
            assert head["ContentLength"] == len(data) and head["Metadata"] == {"sha256": sha(data)}
            body = dc.client().get_object(Bucket=bucket, Key=f"models/sha256/{sha(data)}")["Body"].read()
            assert body == data
    assert got[f"models/sha256/{sha(proj.model_bytes[BIG])}"]["ETag"].strip('"').endswith("-3")  # multipart
    # the datacenters came from RunPod's REST API, asked with the API key
    lookups = [r for r in dcs["rest"].requests if r["path"].startswith("/v1/networkvolumes/")]
    assert [r["path"] for r in lookups] == ["/v1/networkvolumes/vol1eu", "/v1/networkvolumes/vol2us"]
    assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in lookups)
    assert dcs["proxy"].take() >= total
    downloads = len(http_server.requests)

    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol1eu", "--to", "runpod://vol2us")
    assert rc == 0, err
    for t in out["targets"]:
        assert t["models"] == {BIG: "present", SMALL: "present"}
        assert t["bytes_sent"] == 0 and t["bytes_skipped"] == total and t["verified"] == 0
    assert dcs["proxy"].take() < 10_000  # HEAD requests only
    assert len(http_server.requests) == downloads  # nothing downloaded either

    rc, out, err = cli(capsys, proj, "ls", "runpod://vol2us", proj.vid)
    assert rc == 0 and {k: m["status"] for k, m in out["versions"][proj.vid].items()} == {BIG: "present",
                                                                                          SMALL: "present"}


def test_from_a_local_folder_uploads_without_downloading(proj, dcs, capsys, http_server, tmp_path):
    folder = tmp_path / "ComfyUI-models"
    for key, data in proj.model_bytes.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    before = len(http_server.requests)
    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us", "--from", str(folder))
    assert rc == 0, err
    assert out["targets"][0]["models"] == {BIG: "uploaded", SMALL: "uploaded"}
    assert len(http_server.requests) == before
    assert not (tmp_path / "local-store" / "sha256").exists()  # used in place, not copied into the local store


def test_kill_9_during_a_multipart_upload_then_resume(proj, dcs, capsys, tmp_path):
    """The sync is killed (SIGKILL) with some parts on the volume; the next run checks those parts against the
    local bytes, sends only the rest, and the object is whole."""
    big = proj.model_bytes[BIG]
    key = f"models/sha256/{sha(big)}"
    # fill the local store first, so the killed run is only uploading
    assert cli(capsys, proj, "sync", proj.vid)[0] == 0
    dcs["proxy"].rate = 3 << 20  # 3 MiB/s: 12 MiB takes 4 s
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "scripts"), ROOT])}
    p = subprocess.Popen([sys.executable, "-m", "comfyver", "--root", str(proj.root), "models", "sync", proj.vid,
                          "--to", "runpod://vol1eu", "--part-size", "5", "--jobs", "1"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    c = dcs["eu"].client()
    deadline = time.monotonic() + 60
    parts = []
    while time.monotonic() < deadline and p.poll() is None:
        ups = c.list_multipart_uploads(Bucket="vol1eu").get("Uploads", [])
        if ups:
            parts = c.list_parts(Bucket="vol1eu", Key=key, UploadId=ups[0]["UploadId"]).get("Parts", [])
            if parts:
                break
        time.sleep(0.05)
    assert parts and p.poll() is None, p.stderr.read().decode()[-2000:] if p.poll() is not None else "no part"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert "Contents" not in c.list_objects_v2(Bucket="vol1eu", Prefix=key)  # not complete
    dcs["proxy"].rate = 0
    time.sleep(1)  # what the proxy still held from the killed run's connections drains first
    dcs["proxy"].take()

    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol1eu", "--part-size", "5")
    assert rc == 0, err
    t = out["targets"][0]
    assert t["models"][BIG] == "resumed"
    done = sum(p["Size"] for p in parts)
    assert t["bytes_sent"] <= len(big) - done + len(proj.model_bytes[SMALL])
    assert dcs["proxy"].take() < len(big) + len(proj.model_bytes[SMALL]) - done + 100_000
    assert c.get_object(Bucket="vol1eu", Key=key)["Body"].read() == big


def test_verify_finds_a_corrupted_object_and_rehash_mends_it(proj, dcs, capsys):
    assert cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us")[0] == 0
    c = dcs["us"].client()
    small = proj.model_bytes[SMALL]
    key = f"models/sha256/{sha(small)}"
    bad = bytearray(small)
    bad[1000] ^= 0xFF
    c.put_object(Bucket="vol2us", Key=key, Body=bytes(bad), Metadata={"sha256": sha(small)})  # same size and record

    rc, out, _ = cli(capsys, proj, "ls", "runpod://vol2us", proj.vid)
    assert rc == 0  # metadata alone cannot see it
    rc, out, _ = cli(capsys, proj, "verify", "runpod://vol2us", proj.vid)
    assert rc == 1 and out["ok"] is False
    assert out["versions"][proj.vid][BIG] == "ok"
    assert out["versions"][proj.vid][SMALL] == f"bytes hash to {sha(bytes(bad))}, locked {sha(small)}"
    rc = main(["--root", str(proj.root), "models", "verify", "runpod://vol2us", proj.vid])
    text = capsys.readouterr().out
    assert rc == 1 and "DIFFERS" in text and "--rehash" in text

    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us", "--rehash")
    assert rc == 0, err
    assert out["targets"][0]["models"] == {BIG: "present", SMALL: "uploaded"}
    assert c.get_object(Bucket="vol2us", Key=key)["Body"].read() == small
    assert cli(capsys, proj, "verify", "runpod://vol2us", proj.vid)[0] == 0


def test_a_missing_object_is_named_by_ls_and_verify(proj, dcs, capsys):
    assert cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us")[0] == 0
    dcs["us"].client().delete_object(Bucket="vol2us", Key=f"models/sha256/{sha(proj.model_bytes[BIG])}")
    rc, out, _ = cli(capsys, proj, "ls", "runpod://vol2us", proj.vid)
    assert rc == 1 and out["versions"][proj.vid][BIG]["status"] == "missing"
    rc, out, _ = cli(capsys, proj, "verify", "runpod://vol2us", proj.vid)
    assert rc == 1 and out["versions"][proj.vid][BIG] == "missing"


@pytest.mark.parametrize("which", ["secret", "key"])
def test_wrong_credentials_are_a_clear_error_without_the_secret(proj, dcs, capsys, monkeypatch, which):
    wrong = "rps_WRONG_secret_value_x" if which == "secret" else "user_WRONGKEYID"
    monkeypatch.setenv("RUNPOD_S3_SECRET_KEY" if which == "secret" else "RUNPOD_S3_ACCESS_KEY", wrong)
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--to", "runpod://vol1eu"])
    out, err = capsys.readouterr()
    assert rc != 0
    assert "runpod://vol1eu (EU-RO-1)" in err and "RUNPOD_S3_" in err, err
    for secret in (wrong, dcs["eu"].secret, API_KEY):
        assert secret not in out + err
    assert dcs["eu"].client().list_objects_v2(Bucket="vol1eu").get("KeyCount") == 0


def test_no_s3_key_names_the_variables(proj, dcs, capsys, monkeypatch):
    for var in ("RUNPOD_S3_ACCESS_KEY", "RUNPOD_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--to", "runpod://vol1eu"])
    err = capsys.readouterr().err
    assert rc == 2 and "RUNPOD_S3_ACCESS_KEY" in err and "S3 API Keys" in err


def test_a_volume_in_a_datacenter_without_s3_is_refused_before_any_upload(proj, dcs, capsys):
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--to", "runpod://vol2us",
               "--to", "runpod://vol3tx"])
    err = capsys.readouterr().err
    assert rc != 0 and "'US-TX-3' has no S3-compatible API" in err and "EU-RO-1" in err
    assert dcs["us"].client().list_objects_v2(Bucket="vol2us").get("KeyCount") == 0  # nothing half-done
    rc = main(["--root", str(proj.root), "models", "ls", "runpod://vol2us", "--datacenter", "XX-YY-9"])
    assert rc != 0 and "'XX-YY-9' has no S3-compatible API" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["runpod://", "runpod://../etc", "runpod://VOL1", "runpod://a/b"])
def test_a_bad_volume_id_is_refused(proj, dcs, capsys, target):
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--to", target])
    assert rc == 2 and "expected runpod://<network-volume-id>" in capsys.readouterr().err
    assert not dcs["rest"].requests


def test_keys_never_reach_output_or_logs(proj, dcs, capsys, tmp_path):
    """Human and --json output of sync, ls and verify, and the subprocess's stderr (progress), hold no key."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "scripts"), ROOT])}
    p = subprocess.run([sys.executable, "-m", "comfyver", "--root", str(proj.root), "models", "sync", proj.vid,
                        "--to", "runpod://vol1eu", "--to", "runpod://vol2us"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    texts = [p.stdout, p.stderr]
    for args in (["ls", "runpod://vol1eu"], ["verify", "runpod://vol1eu"]):
        for extra in ([], ["--json"]):
            assert main(["--root", str(proj.root), "models", *args, *extra]) == 0
            texts += list(capsys.readouterr())
    everything = "\n".join(texts)
    assert "runpod://vol1eu" in everything
    for secret in (dcs["eu"].secret, dcs["eu"].key, API_KEY):
        assert secret not in everything
    assert not any(secret in " ".join(r["path"] for r in dcs["rest"].requests) for secret in (dcs["eu"].secret,))


@pytest.mark.parametrize("size", [700_000, 11 << 20])
def test_bytes_that_no_longer_match_their_hash_are_never_recorded(dcs, tmp_path, size):
    """A seed file changed after it was checked (same size, other bytes): the upload is refused before an object
    with a false recorded sha256 exists; a multipart upload is aborted."""
    from comfyver.ship import volume
    f = tmp_path / "model.bin"
    data = os.urandom(size)
    f.write_bytes(data)
    claimed = sha(data[:-1] + bytes([data[-1] ^ 1]))  # what the file held when it was checked
    vol = volume.open_volume("runpod://vol2us", "US-KS-2")
    with pytest.raises(volume.ComfyverError, match=r"changed .*uploaded"):
        volume.upload(vol, f, claimed, size, part_size=5 << 20, workers=2)
    c = dcs["us"].client()
    assert c.list_objects_v2(Bucket="vol2us").get("KeyCount") == 0
    assert not c.list_multipart_uploads(Bucket="vol2us").get("Uploads")


def test_deploy_warns_when_the_endpoints_volume_lacks_a_model(proj, dcs, capsys):
    rest = dcs["rest"]
    rest.routes["/v1/endpoints/ep42"] = {"id": "ep42", "templateId": "tpl9", "networkVolumeId": "vol1eu"}
    rest.routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    image = "ghcr.io/acme/comfyui@sha256:" + "ab" * 32
    # only the small model is on the volume
    small = proj.model_bytes[SMALL]
    dcs["eu"].client().put_object(Bucket="vol1eu", Key=f"models/sha256/{sha(small)}", Body=small,
                                  Metadata={"sha256": sha(small)})
    rc = main(["--root", str(proj.root), "deploy", proj.vid, "--api", "v1", "--image", image, "--endpoint", "ep42"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"runpod://vol1eu (EU-RO-1) lacks 1 model(s) of version {proj.vid}: {BIG}" in err
    assert f"comfyver models sync {proj.vid} --to runpod://vol1eu" in err
    assert cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol1eu")[0] == 0
    rc = main(["--root", str(proj.root), "deploy", proj.vid, "--api", "v1", "--image", image, "--endpoint", "ep42", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["warnings"] == []


def test_deploy_says_when_the_volume_cannot_be_checked(proj, dcs, capsys, monkeypatch):
    monkeypatch.delenv("RUNPOD_S3_SECRET_KEY")
    dcs["rest"].routes["/v1/endpoints/ep42"] = {"id": "ep42", "templateId": "tpl9", "networkVolumeId": "vol1eu"}
    dcs["rest"].routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    rc = main(["--root", str(proj.root), "deploy", proj.vid, "--api", "v1", "--image", "ghcr.io/acme/comfyui:v1",
               "--endpoint", "ep42"])
    err = capsys.readouterr().err
    assert rc == 0 and "could not check runpod://vol1eu for the version's models" in err and "RUNPOD_S3_" in err


# --- found by an outside review ----------------------------------------------------------------------
def test_deploy_survives_a_junk_volume_id_from_runpod(proj, dcs, capsys):
    dcs["rest"].routes["/v1/endpoints/ep42"] = {"id": "ep42", "templateId": "tpl9", "networkVolumeId": 123}
    dcs["rest"].routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    rc = main(["--root", str(proj.root), "deploy", proj.vid, "--api", "v1", "--image", "ghcr.io/acme/comfyui:v1",
               "--endpoint", "ep42"])
    out, err = capsys.readouterr()
    assert rc == 0 and "now runs ghcr.io/acme/comfyui:v1" in out and "could not check" in err


def test_a_corrupt_local_blob_with_an_unchanged_stat_is_fetched_again(proj, dcs, capsys, tmp_path, http_server):
    assert cli(capsys, proj, "sync", proj.vid)[0] == 0
    small = proj.model_bytes[SMALL]
    blob = tmp_path / "local-store" / "sha256" / sha(small)
    st = blob.stat()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.seek(10)
        fh.write(b"XYZ")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us")
    assert rc == 0, err
    assert out["targets"][0]["models"][SMALL] == "uploaded"
    key = f"models/sha256/{sha(small)}"
    assert dcs["us"].client().get_object(Bucket="vol2us", Key=key)["Body"].read() == small
    assert blob.read_bytes() == small  # fetched again into the local store


@pytest.mark.parametrize("how", [["--datacenter", "US-KS-2", "runpod://nosuchvol"], ["--datacenter", "US-KS-2",
                                                                                     "runpod://vol1eu"]])
def test_a_volume_that_is_not_there_is_named_not_reported_as_missing_models(proj, dcs, capsys, how):
    rc = main(["--root", str(proj.root), "models", "ls", how[2], proj.vid, *how[:2]])
    err = capsys.readouterr().err
    assert rc == 1 and "no such network volume in US-KS-2" in err and "--datacenter" in err


def test_an_unfinished_upload_begun_by_another_tool_is_resumed_and_recorded(proj, dcs, capsys):
    big = proj.model_bytes[BIG]
    key = f"models/sha256/{sha(big)}"
    c = dcs["us"].client()
    up = c.create_multipart_upload(Bucket="vol2us", Key=key)["UploadId"]  # no sha256 record, as another tool would
    c.upload_part(Bucket="vol2us", Key=key, UploadId=up, PartNumber=1, Body=big[:6 << 20])
    stale = c.create_multipart_upload(Bucket="vol2us", Key=key)["UploadId"]
    c.upload_part(Bucket="vol2us", Key=key, UploadId=stale, PartNumber=2, Body=big[:5 << 20])
    rc, _out, err = cli(capsys, proj, "sync", proj.vid, "--to", "runpod://vol2us", "--part-size", "5")
    assert rc == 0, err
    head = c.head_object(Bucket="vol2us", Key=key)
    assert head["Metadata"] == {"sha256": sha(big)} and c.get_object(Bucket="vol2us", Key=key)["Body"].read() == big
    assert not c.list_multipart_uploads(Bucket="vol2us").get("Uploads")  # leftovers aborted


def test_an_s3_key_never_reaches_an_error(proj, dcs, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_S3_ACCESS_KEY", "user_KEYVALUE\nX-Evil: 1")
    rc = main(["--root", str(proj.root), "models", "ls", "runpod://vol1eu", proj.vid])
    out, err = capsys.readouterr()
    assert rc != 0 and "user_KEYVALUE" not in out + err and "runpod://vol1eu" in err


@pytest.mark.parametrize("value", ["EU-RO-1=http://[::1", "EU-RO-1=http://exa mple.com", "EU-RO-1=http://",
                                   "EU-RO-1=", "EU-RO-1", "EU-RO-1=ftp://x"])
def test_a_malformed_endpoint_override_names_the_variable(proj, dcs, capsys, monkeypatch, value):
    monkeypatch.setenv("COMFYVER_RUNPOD_S3_ENDPOINTS", value)
    rc = main(["--root", str(proj.root), "models", "ls", "runpod://vol1eu", proj.vid])
    assert rc == 2 and "COMFYVER_RUNPOD_S3_ENDPOINTS" in capsys.readouterr().err


def test_part_size_is_bounded(proj, dcs, capsys):
    rc = main(["--root", str(proj.root), "models", "sync", proj.vid, "--to", "runpod://vol2us", "--part-size", "2000"])
    assert rc == 2 and "5 to 1024 MiB" in capsys.readouterr().err


S3_NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


@pytest.mark.parametrize("next_marker", [lambda m: 1, lambda m: m + 6000], ids=["stuck", "past-10000-parts"])
def test_a_listparts_that_never_ends_is_a_clear_error(tmp_path, monkeypatch, next_marker):
    """A server whose ListParts always says IsTruncated (its marker stuck, or running past S3's 10,000 parts)
    ends the listing with an error naming the volume and the key (issue 24 L13)."""
    from comfyver.ship import volume

    data = os.urandom(6 << 20)
    key = f"models/sha256/{sha(data)}"
    src = tmp_path / "blob"
    src.write_bytes(data)
    calls = []

    def bucket(h, body):  # HeadBucket, ListMultipartUploads
        return 200, {"Content-Type": "application/xml"}, (
            f'<ListMultipartUploadsResult {S3_NS}><Bucket>vol1lie</Bucket><IsTruncated>false</IsTruncated>'
            f'<Upload><Key>{key}</Key><UploadId>u1</UploadId><Initiated>2024-01-01T00:00:00.000Z</Initiated>'
            '</Upload></ListMultipartUploadsResult>').encode()

    def obj(h, body):
        if h.command == "HEAD":  # HeadObject: not there yet
            return 404, {}, b""
        if h.command != "GET" or "uploadId=" not in h.path:  # no upload may begin
            return 403, {"Content-Type": "application/xml"}, b"<Error><Code>AccessDenied</Code></Error>"
        calls.append(h.path)
        if len(calls) > 40:  # the test's own bound: the unfixed loop would never end
            return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchUpload</Code></Error>"
        marker = int(h.path.partition("part-number-marker=")[2].split("&")[0] or 0)
        return 200, {"Content-Type": "application/xml"}, (
            f'<ListPartsResult {S3_NS}><Bucket>vol1lie</Bucket><Key>{key}</Key><UploadId>u1</UploadId>'
            f'<PartNumberMarker>{marker}</PartNumberMarker><NextPartNumberMarker>{next_marker(marker)}'
            '</NextPartNumberMarker><MaxParts>1000</MaxParts><IsTruncated>true</IsTruncated><Part>'
            '<PartNumber>1</PartNumber><LastModified>2024-01-01T00:00:00.000Z</LastModified>'
            f'<ETag>"{"0" * 32}"</ETag><Size>{5 << 20}</Size></Part></ListPartsResult>').encode()

    srv = HTTPServer()
    srv.routes["/vol1lie"] = bucket
    srv.routes[f"/vol1lie/{key}"] = obj
    monkeypatch.setenv("COMFYVER_RUNPOD_S3_ENDPOINTS", f"EU-RO-1={srv.url}")
    monkeypatch.setenv("RUNPOD_S3_ACCESS_KEY", "user_test")
    monkeypatch.setenv("RUNPOD_S3_SECRET_KEY", "secret_test")
    try:
        vol = volume.open_volume("runpod://vol1lie", "EU-RO-1")
        with pytest.raises(volume.ComfyverError, match="never ends") as exc:
            volume.upload(vol, src, sha(data), len(data), part_size=5)
    finally:
        srv.close()
    assert "runpod://vol1lie" in exc.value.message and key in exc.value.message
    assert len(calls) <= 3
