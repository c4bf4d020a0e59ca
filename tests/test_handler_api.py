"""The handler through the runpod SDK's local API (`python -m handler --rp_serve_api`): a bad-input corpus,
progress reports; GCS (gcp-storage-emulator) and S3 (moto server) delivery; `python -m handler cli`."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
import requests

from handler.errors import JobError
from handler.storage import GCSStore
from tests.handler import env
from tests.support.httpserver import HTTPServer

SECRET = "s3cr3t-key-that-must-not-leak"


def E(r) -> dict:
    """The structured error of a result: RunPod's `error` is a string holding a JSON object."""
    return json.loads(r["error"])


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return env.shared_worker(tmp_path_factory.mktemp("handler-comfy"))


@pytest.fixture(scope="module")
def recorder():
    srv = HTTPServer()
    srv.routes["/"] = {}
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(worker, recorder, tmp_path_factory):
    a = env.LocalAPI({
        "COMFY_URL": worker.client.url, "COMFY_HOME": str(worker.settings.comfy_home), "OUTPUT_MODE": "base64",
        "COMFYVER_VERSION_ID": "test-version", "GCS_BUCKET": "", "BUCKET_ENDPOINT_URL": "",
        "BUCKET_SECRET_ACCESS_KEY": SECRET,
        "RUNPOD_WEBHOOK_POST_OUTPUT": recorder.url + "/job-done/$ID?gpu=test",
    }, tmp_path_factory.mktemp("api") / "api.log")
    yield a
    a.stop()


def test_runsync_success(api):
    r = api.runsync({"workflow": env.invert_workflow(0x202020)})
    assert r["status"] == "COMPLETED", r
    [o] = r["output"]["outputs"]
    assert o["kind"] == "image" and base64.b64decode(o["data"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_reported_through_the_sdk(api, recorder):
    r = api.runsync({"workflow": env.slow_workflow(seconds=2.5, steps=10, color=21)})
    assert r["status"] == "COMPLETED", r
    def posts():
        return [json.loads(q["body"]) for q in recorder.requests if q["path"].startswith(f"/job-done/{r['id']}")]
    # each update travels in its own thread (SDK): the last may land just after the job returns
    deadline = time.monotonic() + 10
    while not any(p["output"]["step"] == 10 for p in posts()) and time.monotonic() < deadline:
        time.sleep(0.1)
    posts = posts()
    assert posts, recorder.requests
    assert all(p["status"] == "IN_PROGRESS" for p in posts)
    steps = [p["output"] for p in posts]
    assert all(s["node_id"] == "2" and s["node_type"] == "ComfyverSlow" and s["max"] == 10 for s in steps)
    assert max(s["step"] for s in steps) == 10 and {"step": 10, "percent": 100.0}.items() <= \
        next(s for s in steps if s["step"] == 10).items()
    assert len(steps) < 10  # throttled, not one request per step


B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 20).decode()
WF = env.invert_workflow()


def wf_with(**nodes):
    w = json.loads(json.dumps(WF))
    w.update(nodes)
    return w


BAD_INPUTS = [
    ("no workflow", {}, "exactly one of workflow"),
    ("both workflow and url", {"workflow": WF, "workflow_url": "https://example.com/w.json"}, "exactly one"),
    ("workflow not json", {"workflow": "{not json"}, "not valid JSON"),
    ("workflow a list", {"workflow": [1, 2]}, "non-empty JSON object"),
    ("workflow empty", {"workflow": {}}, "non-empty JSON object"),
    ("workflow a number", {"workflow": 42}, "non-empty JSON object"),
    ("unknown field", {"workflow": WF, "prompt": "x"}, "unknown field"),
    ("file url", {"workflow_url": "file:///etc/passwd"}, "scheme 'file'"),
    ("ftp url", {"workflow_url": "ftp://example.com/w.json"}, "scheme 'ftp'"),
    ("loopback url", {"workflow_url": "http://127.0.0.1:9/w.json"}, "non-public"),
    ("ipv6 loopback", {"workflow_url": "http://[::1]:9/w.json"}, "non-public"),
    ("metadata ip", {"workflow_url": "http://169.254.169.254/latest/meta-data/"}, "non-public"),
    ("metadata host", {"workflow_url": "http://metadata.google.internal/computeMetadata/v1/"}, "metadata"),
    ("private ip", {"workflow_url": "http://10.1.2.3/w.json"}, "non-public"),
    ("url without host", {"workflow_url": "http:///w.json"}, "no host"),
    ("images not a list", {"workflow": WF, "images": "a.png"}, "images: expected a list"),
    ("image traversal", {"workflow": WF, "images": [{"name": "../../etc/passwd", "image": B64}]}, "not allowed"),
    ("image absolute", {"workflow": WF, "images": [{"name": "/tmp/x.png", "image": B64}]}, "not allowed"),
    ("image subfolder", {"workflow": WF, "images": [{"name": "sub/x.png", "image": B64}]}, "not allowed"),
    ("image hidden", {"workflow": WF, "images": [{"name": ".bashrc", "image": B64}]}, "not allowed"),
    ("image bad base64", {"workflow": WF, "images": [{"name": "x.png", "image": "!!!"}]}, "not valid base64"),
    ("image file url", {"workflow": WF, "images": [{"name": "x.png", "image": "file:///etc/passwd"}]}, "'file'"),
    ("image loopback url", {"workflow": WF, "images": [{"name": "x.png", "image": "http://127.0.0.1:9/x"}]},
     "non-public"),
    ("image data uri not base64", {"workflow": WF, "images": [{"name": "x.png", "image": "data:image/png,abc"}]},
     "must be base64"),
    ("image missing data", {"workflow": WF, "images": [{"name": "x.png"}]}, "images[0]: expected"),
    ("image duplicate names", {"workflow": WF, "images": [{"name": "x.png", "image": B64}] * 2}, "same name"),
    ("override unknown node", {"workflow": WF, "overrides": {"77": {"seed": 1}}}, "node '77' is not in"),
    ("override not a list", {"workflow": WF, "overrides": "seed=1"}, "list or an object"),
    ("override item incomplete", {"workflow": WF, "overrides": [{"node_id": "1", "field": "inputs.width"}]},
     "overrides[0]"),
    ("override values not object", {"workflow": WF, "overrides": {"1": 5}}, "overrides['1']"),
    ("output mode unknown", {"workflow": WF, "output_mode": "ftp"}, "output_mode"),
    ("gcs without bucket", {"workflow": WF, "output_mode": "gcs"}, "needs a bucket"),
    ("gcs bad bucket", {"workflow": WF, "output_mode": "gcs", "gcs_bucket": "Bad_Bucket!"}, "not a valid bucket"),
    ("gcs prefix traversal", {"workflow": WF, "output_mode": "gcs", "gcs_bucket": "b1x", "gcs_prefix": "a/../../x"},
     "not a safe object prefix"),
    ("s3 without endpoint", {"workflow": WF, "output_mode": "s3"}, "BUCKET_ENDPOINT_URL"),
    ("timeout negative", {"workflow": WF, "timeout": -1}, "timeout"),
    ("timeout text", {"workflow": WF, "timeout": "soon"}, "timeout"),
    ("verbose text", {"workflow": WF, "verbose": "yes"}, "verbose"),
    ("version id traversal", {"workflow": WF, "version_id": "../../etc"}, "not a version id"),
    ("version id mismatch", {"workflow": WF, "version_id": "sdxl-other"}, "does not match"),
    ("unknown node type", {"workflow": wf_with(**{"9": {"class_type": "KSamplerTurbo9000", "inputs": {}}})},
     "not installed"),
    ("node without class_type", {"workflow": wf_with(**{"9": {"inputs": {}}})}, "no class_type"),
    ("missing model", {"workflow": wf_with(**{"9": {"class_type": "CheckpointLoaderSimple",
                                                    "inputs": {"ckpt_name": "nope.safetensors"}}})}, "models/checkpoints"),
    ("broken link", {"workflow": wf_with(**{"3": {"class_type": "SaveImage",
                                                  "inputs": {"images": ["42", 0], "filename_prefix": "x"}}})},
     "not in the workflow"),
    ("missing required input", {"workflow": wf_with(**{"2": {"class_type": "ImageInvert", "inputs": {}}})},
     "required input 'image'"),
    ("missing input image", {"workflow": wf_with(**{"9": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}}})},
     "not in ComfyUI's input folder"),
    ("invalid combo value", {"workflow": wf_with(**{"9": {"class_type": "ImageScale", "inputs": {
        "image": ["1", 0], "upscale_method": "magic", "width": 8, "height": 8, "crop": "disabled"}}})},
     "not a valid 'upscale_method'"),
    ("node fails at run time", {"workflow": wf_with(**{"2": {"class_type": "ComfyverFail",
                                                             "inputs": {"image": ["1", 0], "message": "bad seed"}}})},
     "bad seed"),
    ("comfyui rejects value", {"workflow": wf_with(**{"1": {"class_type": "EmptyImage", "inputs": {
        "width": -5, "height": 8, "batch_size": 1, "color": 0}}})}, "width"),
]


def test_bad_input_corpus_is_answered_with_structured_errors(api, worker):
    assert len(BAD_INPUTS) >= 30
    failures = []
    for name, job_input, needle in BAD_INPUTS:
        r = api.runsync(job_input)
        try:
            err = json.loads(r.get("error") or "null")
        except ValueError:
            err = None
        text = json.dumps(err)
        if r.get("status") != "FAILED" or not isinstance(err, dict) or not err.get("type") or not err.get("message") \
                or needle not in text or "Traceback (most recent call last)" in text or SECRET in text:
            failures.append((name, r))
    assert not failures, json.dumps(failures, indent=1)[:4000]
    # the worker is still healthy: ComfyUI answers and a good job runs
    assert requests.get(worker.client.url + "/system_stats", timeout=5).ok
    assert api.runsync({"workflow": env.invert_workflow(0x303030)})["status"] == "COMPLETED"


# --- storage -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcs():
    emu = env.GCSEmulator("comfy-test")
    yield emu
    emu.stop()


def test_gcs_upload(worker, gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    w = env.attached_worker(worker, output_mode="gcs", gcs_bucket="comfy-test")
    r = env.run(w.handle({"id": "gcs-job-1", "input": {"workflow": env.invert_workflow(0x405060),
                                                        "gcs_prefix": "team/a"}}))
    assert "error" not in r, r
    [o] = r["outputs"]
    assert o["url"] == o["gcs_url"] == r["gcs_url"] == f"gs://comfy-test/team/a/gcs-job-1/{o['filename']}"
    assert r["size"] == o["size"] and "data" not in o
    data = gcs.read("comfy-test", f"team/a/gcs-job-1/{o['filename']}")
    assert len(data) == o["size"] and data[:4] == b"\x89PNG"
    env.run(w.client.close())


def test_gcs_create_only(worker, monkeypatch):
    """Uploads carry ifGenerationMatch=0. gcp-storage-emulator ignores preconditions, so a recording server
    answers as GCS does for an existing object: 412, then the object's metadata."""
    import hashlib
    srv = HTTPServer()
    existing = base64.b64encode(hashlib.md5(b"first").digest()).decode()
    srv.routes["/upload/storage/v1/b/comfy-test/o"] = lambda h, body: (
        412, {}, {"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}})
    srv.routes["/storage/v1/b/comfy-test/o/once%2Fx.txt"] = {"bucket": "comfy-test", "name": "once/x.txt",
                                                            "md5Hash": existing, "generation": "1"}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", srv.url)
    try:
        store = GCSStore(worker.settings, "comfy-test")
        # same bytes: an earlier attempt had landed and only its answer was lost
        assert store.put("once/x.txt", io.BytesIO(b"first"), 5, "text/plain")["gcs_url"] == "gs://comfy-test/once/x.txt"
        with pytest.raises(JobError, match="already exists with other content"):
            store.put("once/x.txt", io.BytesIO(b"other"), 5, "text/plain")
        uploads = [q for q in srv.requests if q["path"].startswith("/upload/")]
        assert len(uploads) == 2 and all("ifGenerationMatch=0" in q["path"] for q in uploads)
    finally:
        srv.close()


def test_gcs_down_retries_then_clear_error(worker, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{env.free_port()}")
    w = env.attached_worker(worker, output_mode="gcs", gcs_bucket="comfy-test", gcs_retries=2,
                            gcs_retry_base_sleep=0.05)
    r = env.run(w.handle({"id": "gcs-down", "input": {"workflow": env.invert_workflow(0x506070)}}))
    e = E(r)
    assert e["type"] == "storage" and e["attempts"] == 3 and "after 3 attempts" in e["message"]
    assert "gs://comfy-test/comfy/outputs/gcs-down/" in e["message"] and "base64" in e["hint"]
    ok = env.run(w.handle({"id": "after", "input": {"workflow": env.invert_workflow(0x506071),
                                                     "output_mode": "base64"}}))
    assert ok["status"] == "success"
    env.run(w.client.close())


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer
    port = env.free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    srv.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id="AKIATEST", aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket="comfy-out")
    yield url
    srv.stop()


def test_s3_upload(worker, s3, monkeypatch):
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    w = env.attached_worker(worker, output_mode="s3", s3_endpoint_url=s3, s3_access_key_id="AKIATEST",
                            s3_secret_access_key=SECRET, s3_bucket="comfy-out")
    r = env.run(w.handle({"id": "s3-job", "input": {"workflow": env.invert_workflow(0x607080)}}))
    assert "error" not in r, r
    [o] = r["outputs"]
    assert o["url"] == f"s3://comfy-out/comfy/outputs/s3-job/{o['filename']}"
    got = requests.get(o["signed_url"], timeout=10)
    assert got.ok and len(got.content) == o["size"] and got.content[:4] == b"\x89PNG"
    assert SECRET not in json.dumps(r)
    env.run(w.client.close())


def test_s3_unreachable_error_has_no_secret(worker, monkeypatch):
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    w = env.attached_worker(worker, output_mode="s3", s3_endpoint_url=f"http://127.0.0.1:{env.free_port()}",
                            s3_access_key_id="AKIATEST", s3_secret_access_key=SECRET, s3_bucket="comfy-out",
                            gcs_retries=0)
    r = env.run(w.handle({"id": "s3-down", "input": {"workflow": env.invert_workflow(0x607081)}}))
    assert E(r)["type"] == "storage" and "s3://comfy-out/" in E(r)["message"]
    assert SECRET not in json.dumps(r)
    env.run(w.client.close())


# --- cli ----------------------------------------------------------------------------------------------
def test_cli_one_job_to_a_folder(worker, tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": {"workflow": env.invert_workflow(0x708090)}}))
    cli_env = {**os.environ, "COMFY_URL": worker.client.url, "COMFY_HOME": str(worker.settings.comfy_home)}
    p = subprocess.run([sys.executable, "-m", "handler", "cli", "--input", str(job), "--out", str(tmp_path / "out"),
                        "--json"], cwd=env.ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    [o] = result["outputs"]
    assert (tmp_path / "out" / o["filename"]).read_bytes()[:4] == b"\x89PNG"
    job.write_text(json.dumps({"workflow": wf_with(**{"9": {"class_type": "Nope", "inputs": {}}})}))
    p = subprocess.run([sys.executable, "-m", "handler", "cli", "--input", str(job), "--out", str(tmp_path / "o2")],
                       cwd=env.ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "error (validation)" in p.stderr and "'Nope'" in p.stderr
    p = subprocess.run([sys.executable, "-m", "handler", "cli", "--input", str(tmp_path / "missing.json"), "--out",
                        str(tmp_path / "o3")], cwd=env.ROOT, env=cli_env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "missing.json" in p.stderr


def test_gcs_validate_at_start(worker, gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    good = env.attached_worker(worker, output_mode="gcs", gcs_bucket="comfy-test", gcs_validate=True)
    good.start()  # probe object created and deleted
    bad = env.attached_worker(worker, output_mode="gcs", gcs_bucket="no-such-bucket", gcs_validate=True,
                              gcs_retries=0)
    with pytest.raises(RuntimeError, match="GCS_VALIDATE: bucket 'no-such-bucket' is not usable"):
        bad.start()


def test_gcs_signed_url_without_key_is_a_clear_error(worker, gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    w = env.attached_worker(worker, output_mode="gcs", gcs_bucket="comfy-test", gcs_signed_url_ttl=600)
    r = env.run(w.handle({"id": "signed", "input": {"workflow": env.invert_workflow(0x0F0E0D)}}))
    e = E(r)
    assert e["type"] == "storage" and "signed URL" in e["message"] and "GOOGLE_APPLICATION_CREDENTIALS" in e["hint"]
    env.run(w.client.close())


def test_worker_exits_with_log_tail_when_comfyui_cannot_start(tmp_path):
    (tmp_path / "main.py").write_text("import sys\nprint('boom: no usable GPU')\nsys.exit(4)\n")
    p = subprocess.run([sys.executable, "-m", "handler"], cwd=env.ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COMFY_HOME": str(tmp_path), "COMFY_PORT": str(env.free_port())})
    assert p.returncode == 1
    assert "did not become ready (ComfyUI exited with code 4)" in p.stderr and "boom: no usable GPU" in p.stderr


# --- drop-in for worker-comfyui: its documented job JSON, environment and result shape ------------------
def _worker_comfyui_env(monkeypatch, endpoint: str):
    """worker-comfyui's S3 environment (docs/configuration.md there): BUCKET_* only, no OUTPUT_MODE/BUCKET_NAME."""
    for var in ("OUTPUT_MODE", "GCS_BUCKET", "BUCKET_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("OUTPUT_FORMAT", "worker-comfyui")


def _readme_job(png_b64: str) -> dict:
    """The input of worker-comfyui's README: workflow + images[{name, image: data URI}]."""
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "input_image_1.png"}, "_meta": {"title": "Load"}},
          "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
          "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "ComfyUI"}}}
    return {"input": {"workflow": wf, "images": [{"name": "input_image_1.png",
                                                  "image": "data:image/png;base64," + png_b64}]}}


def test_worker_comfyui_job_and_s3_environment_work_unchanged(worker, s3, monkeypatch):
    from handler.settings import Settings
    from tests.test_handler import png_b64

    _worker_comfyui_env(monkeypatch, f"{s3}/comfy-out")  # path-style: the bucket is in the endpoint's path
    settings = Settings()
    assert settings.output_mode == "s3" and settings.output_format == "worker-comfyui"
    w = env.attached_worker(worker, output_mode=settings.output_mode, output_format=settings.output_format,
                            s3_endpoint_url=settings.s3_endpoint_url, s3_bucket=settings.s3_bucket,
                            s3_access_key_id=settings.s3_access_key_id,
                            s3_secret_access_key=settings.s3_secret_access_key)
    r = env.run(w.handle({"id": "wc-job", **_readme_job(png_b64((1, 2, 3)))}))
    assert "error" not in r, r
    [img] = r["images"]  # field by field as its README documents output.images
    assert set(img) == {"filename", "type", "data"} and img["type"] == "s3_url"
    assert img["filename"].startswith("ComfyUI_") and img["filename"].endswith(".png")
    got = requests.get(img["data"], timeout=10)
    assert got.ok and got.content[:4] == b"\x89PNG"
    assert SECRET not in json.dumps(r)
    env.run(w.client.close())


def test_worker_comfyui_base64_result_and_no_images(worker, monkeypatch):
    from tests.test_handler import png_b64

    w = env.attached_worker(worker, output_mode="base64", output_format="worker-comfyui")
    # base64 wrapped in lines and a name with parentheses and non-ASCII, as clients send them
    wrapped = "\n".join(textwrap.wrap(png_b64((9, 9, 9)), 76))
    job = _readme_job(wrapped)
    job["input"]["images"][0]["name"] = "bild (1) é.png"
    job["input"]["workflow"]["1"]["inputs"]["image"] = "bild (1) é.png"
    r = env.run(w.handle({"id": "wc-b64", **job}))
    assert "error" not in r, r
    [img] = r["images"]
    assert img["type"] == "base64" and base64.b64decode(img["data"])[:4] == b"\x89PNG"
    assert "data" not in r["outputs"][0]  # not sent twice
    text_only = {"1": {"class_type": "ComfyverSaveText", "inputs": {"text": "no image", "filename_prefix": "t"}}}
    r = env.run(w.handle({"id": "wc-none", "input": {"workflow": text_only, "comfy_org_api_key": "comfyui-key-123"}}))
    assert r["status"] == "success_no_images" and r["images"] == []
    assert "comfyui-key-123" not in json.dumps(r)
    env.run(w.client.close())


@pytest.mark.parametrize("endpoint, base, bucket", [
    ("https://my-bucket.s3.eu-west-1.amazonaws.com", "https://s3.eu-west-1.amazonaws.com", "my-bucket"),
    ("http://127.0.0.1:9000/comfy-out", "http://127.0.0.1:9000", "comfy-out"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000", None),  # an IP is never a bucket (was "127")
    # found by an outside review
    ("https://files.s3corp.com", "https://files.s3corp.com", None),  # not AWS: a host, not a bucket
    ("https://minio.s3.local", "https://minio.s3.local", None),
    ("https://my.bucket.s3.amazonaws.com", "https://s3.amazonaws.com", "my.bucket"),  # dotted bucket names
    ("https://b1.s3.us-east-1.amazonaws.com/prefix", "https://s3.us-east-1.amazonaws.com", "b1"),
    ("http://host:9000/bucket/sub", "http://host:9000/bucket/sub", None),  # ambiguous: BUCKET_NAME needed
    ("https://u:p@host/bucket", "https://host", "bucket"),
    ("http://[::1]:9000/b", "http://[::1]:9000", "b"),
])
def test_bucket_from_the_endpoint_url(endpoint, base, bucket):
    from handler.storage import s3_endpoint_and_bucket

    assert s3_endpoint_and_bucket(endpoint) == (base, bucket)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_sigterm_during_an_input_download_ends_the_worker_and_its_comfyui(tmp_path):
    """W4: RunPod stops a worker (SIGTERM) while a job is downloading its input from a slow server. The worker
    exits promptly and takes its ComfyUI along; the download does not hold it."""
    import threading

    from tests.test_handler import dripping
    drip = HTTPServer(tmp_path)
    seen = threading.Event()
    route = dripping(threading.Event(), every=0.2)
    drip.routes["/slow.png"] = lambda handler, body: (seen.set(), route(handler, body))[1]
    home = env.comfy_tree(tmp_path)
    api = env.LocalAPI({"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "COMFY_URL": "",
                        "OUTPUT_MODE": "base64", "ALLOWED_FETCH_HOSTS": "127.0.0.1", "GCS_BUCKET": "",
                        "BUCKET_ENDPOINT_URL": "", "COMFY_STOP_GRACE": "3"}, tmp_path / "api.log")
    try:
        [comfy] = _children(api.proc.pid)
        wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "s.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "slow"}}}
        job = {"workflow": wf, "images": [{"name": "s.png", "image": f"{drip.url}/slow.png"}]}

        def send():  # the SDK's local /run only queues; /runsync runs the job (and is cut off by the stop)
            try:
                api.runsync(job, timeout=60)
            except requests.RequestException:
                pass
        threading.Thread(target=send, daemon=True).start()
        assert seen.wait(30), "the download never started"
        time.sleep(0.5)
        api.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        api.proc.wait(20)
        assert time.monotonic() - t0 < 10 and api.proc.returncode == 143
        assert "jobs still running 3 s after SIGTERM" in api.log.read_text()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{comfy}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{comfy}").exists() or "Z" in Path(f"/proc/{comfy}/stat").read_text().split(")")[1][:3]
    finally:
        if api.proc.poll() is None:
            api.proc.kill()
        api.stop()
        drip.close()
