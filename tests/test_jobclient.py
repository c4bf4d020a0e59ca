"""`comfyver run --endpoint/--local`: submit, progress, outputs, failures, cancel.

- `--local`: the runpod SDK's own local API server (`--rp_serve_api`) serving a small handler
  written by this module that answers in the handler's documented result shape.
- `--endpoint`: a local server answering RunPod's serverless job API in its documented shapes
  (https://docs.runpod.io/serverless/endpoints/operation-reference: POST /v2/{id}/run,
  GET /v2/{id}/status/{job}, POST /v2/{id}/cancel/{job}); the client is the runpod SDK's Endpoint.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.cli import main
from comfyver.ship import jobclient

from tests.support.procs import Watched
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[1]
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


TINY_HANDLER = r'''
import base64, json, time, runpod

def handler(job):
    inp = job["input"]
    wf = inp["workflow"]
    if wf.get("fail"):
        # the SDK's local API declares `error` a string: structured errors travel as JSON text
        return {"error": json.dumps({"kind": "execution", "message": "KSampler failed: out of memory", "node_id": "3"})}
    time.sleep(wf.get("sleep", 0))
    echo = json.dumps({"overrides": inp.get("overrides"), "images": [i["name"] for i in inp.get("images", [])]})
    outs = [{"node_id": "9", "kind": "image", "filename": "ComfyUI_00001_.png", "data": wf["png"]},
            {"node_id": "12", "kind": "text", "filename": "echo.json", "data": base64.b64encode(echo.encode()).decode()}]
    if wf.get("url"):
        outs.append({"node_id": "9", "kind": "image", "filename": "../../escape.png", "url": wf["url"]})
    return {"outputs": outs, "prompt_id": "p1"}

runpod.serverless.start({"handler": handler})
'''



@pytest.fixture(scope="module")
def local_api(tmp_path_factory):
    d = tmp_path_factory.mktemp("local-api")
    (d / "tiny_handler.py").write_text(TINY_HANDLER)
    port = free_port()
    log = open(d / "api.log", "wb")
    env = {**os.environ, "RUNPOD_WEBHOOK_PING": "", "UVICORN_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "tiny_handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                             "--rp_api_port", str(port)], cwd=d, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/docs", timeout=1).status_code < 500:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((d / "api.log").read_text())
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def workflow(tmp_path: Path, **extra) -> Path:
    p = tmp_path / "wf.json"
    p.write_text(json.dumps({"png": base64.b64encode(PNG).decode(), **extra}))
    return p


# ------------------------------------------------------------------ local API (runpod SDK server)
def test_local_job_outputs_saved(local_api, tmp_path, http_server, capsys, monkeypatch):
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", f"127.0.0.1:{http_server.port}")  # plays a public host
    (http_server.files_root / "big.png").write_bytes(PNG * 3)
    wf = workflow(tmp_path, url=f"{http_server.url}/big.png")
    img = tmp_path / "cat.png"
    img.write_bytes(PNG)
    out = tmp_path / "out"
    rc = main(["run", "--local", local_api, str(wf), "--image", str(img), "--set", "6.inputs.text=a red fox",
               "--set", "3.inputs.seed=42", "--out", str(out), "--json", "--poll", "0.1"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["status"] == "COMPLETED" and res["job_id"].startswith("test-")
    assert (out / "ComfyUI_00001_.png").read_bytes() == PNG
    echo = json.loads((out / "echo.json").read_text())
    assert echo == {"images": ["cat.png"], "overrides": [
        {"node_id": "6", "field": "inputs.text", "value": "a red fox"},
        {"node_id": "3", "field": "inputs.seed", "value": 42}]}
    # a URL output lands inside --out under its bare name, never where "../../" points
    assert (out / "escape.png").read_bytes() == PNG * 3
    assert not (tmp_path.parent / "escape.png").exists()
    assert sorted(Path(f["path"]).name for f in res["outputs"]) == ["ComfyUI_00001_.png", "echo.json", "escape.png"]
    assert not list(out.glob("*.part"))


def test_local_job_human_summary(local_api, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--local", local_api, str(workflow(tmp_path)), "--out", str(out), "--poll", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job test-") and ": COMPLETED in " in lines[0]
    assert f"  image  node 9: {out / 'ComfyUI_00001_.png'} ({len(PNG)} bytes)" in lines


def test_local_job_failure_exit_1_with_error(local_api, tmp_path, capsys):
    wf = workflow(tmp_path, fail=True)
    rc = main(["run", "--local", local_api, str(wf), "--out", str(tmp_path / "out"), "--poll", "0.1"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "FAILED" in cap.out and "KSampler failed: out of memory (node 3)" in cap.err
    assert not (tmp_path / "out").exists()


def test_local_timeout_exit_124(local_api, tmp_path, capsys):
    wf = workflow(tmp_path, sleep=2)
    rc = main(["run", "--local", local_api, str(wf), "--out", str(tmp_path / "out"), "--timeout", "0.5",
               "--poll", "0.1", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 124 and res["status"] == "TIMED_OUT" and "0.5 s" in res["error"]
    time.sleep(2)  # the SDK's local server runs one job at a time: let it finish


def test_local_unreachable(tmp_path, capsys):
    rc = main(["run", "--local", f"http://127.0.0.1:{free_port()}", str(workflow(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 1 and "local worker http://127.0.0.1:" in err and "python -m handler --rp_serve_api" in err


# ------------------------------------------------------------------ RunPod job API (runpod SDK client)
class FakeQueue:
    """Answers /v2/{endpoint}/run|status|cancel like RunPod, from a scripted list of status answers."""

    def __init__(self, server, statuses: list[dict], endpoint: str = "ep1"):
        self.statuses, self.cancelled = list(statuses), []
        server.routes[f"/v2/{endpoint}/run"] = lambda h, b: (200, {}, {"id": "job-1", "status": "IN_QUEUE"})
        server.routes[f"/v2/{endpoint}/status/job-1"] = self.status
        server.routes[f"/v2/{endpoint}/cancel/job-1"] = self.cancel

    def status(self, h, b):
        if self.cancelled:
            return 200, {}, {"id": "job-1", "status": "CANCELLED"}
        s = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return 200, {}, {"id": "job-1", **s}

    def cancel(self, h, b):
        self.cancelled.append(True)
        return 200, {}, {"id": "job-1", "status": "CANCELLED"}


@pytest.fixture
def runpod_api(http_server, monkeypatch):
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", http_server.url + "/v2")
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_JOBKEY_123456")
    return http_server


def test_endpoint_job_with_progress(runpod_api, tmp_path):
    FakeQueue(runpod_api, [{"status": "IN_QUEUE"},
                           {"status": "IN_PROGRESS", "output": {"value": 3, "max": 20, "message": "KSampler"}},
                           {"status": "IN_PROGRESS", "output": {"value": 20, "max": 20, "message": "KSampler"}},
                           {"status": "COMPLETED", "output": {"outputs": [
                               {"node_id": "9", "kind": "image", "filename": "a.png",
                                "data": base64.b64encode(PNG).decode()}]}}])
    seen = []
    backend = jobclient.RunPodBackend("ep1")
    job_input = jobclient.build_input(workflow(tmp_path), sets=["6.inputs.text=fox"], output_mode="base64")
    res = jobclient.run_job(backend, job_input, tmp_path / "out", poll=0.01, on_progress=seen.append)
    assert res.status == "COMPLETED" and res.exit_code == 0
    assert [(p.completed, p.total, p.text) for p in seen] == [(3, 20, "KSampler"), (20, 20, "KSampler")]
    assert (tmp_path / "out/a.png").read_bytes() == PNG
    run_req = next(r for r in runpod_api.requests if r["path"] == "/v2/ep1/run")
    assert run_req["headers"]["Authorization"] == "Bearer rpa_JOBKEY_123456"
    body = json.loads(run_req["body"])
    assert body["input"]["output_mode"] == "base64" and body["input"]["overrides"][0]["value"] == "fox"
    assert all(r["method"] == "GET" for r in runpod_api.requests if "/status/" in r["path"])


@pytest.mark.parametrize("status,code", [("FAILED", 1), ("TIMED_OUT", 124), ("CANCELLED", 130)])
def test_endpoint_final_states_exit_codes(runpod_api, tmp_path, capsys, status, code):
    FakeQueue(runpod_api, [{"status": status, "error": "worker said no"}])
    rc = main(["run", "--endpoint", "ep1", str(workflow(tmp_path)), "--poll", "0.01", "--json"])
    assert rc == code
    assert json.loads(capsys.readouterr().out)["status"] == status


def test_endpoint_timeout_cancels(runpod_api, tmp_path):
    q = FakeQueue(runpod_api, [{"status": "IN_PROGRESS"}])
    res = jobclient.run_job(jobclient.RunPodBackend("ep1"), {"workflow": {}}, tmp_path, timeout=0.2, poll=0.02)
    assert res.status == "TIMED_OUT" and res.exit_code == 124 and q.cancelled


def test_ctrl_c_cancels_the_job(runpod_api, tmp_path):
    q = FakeQueue(runpod_api, [{"status": "IN_PROGRESS", "output": {"value": 1, "max": 10}}])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    proc = Watched([sys.executable, "-m", "comfyver", "run", "--endpoint", "ep1", str(workflow(tmp_path)),
                    "--poll", "0.05", "--out", str(tmp_path / "out")], env=env)
    proc.wait_line("submitted job job-1", timeout=60)  # Ctrl-C lands while following, not during start-up
    proc.until(lambda: any("/status/" in r["path"] for r in runpod_api.requests), 30, "a status poll")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert q.cancelled and any(r["method"] == "POST" and r["path"] == "/v2/ep1/cancel/job-1" for r in runpod_api.requests)
    assert "CANCELLED" in out and "job cancelled" in err


def test_endpoint_bad_key_and_missing_key(runpod_api, tmp_path, monkeypatch, capsys):
    runpod_api.routes["/v2/ep1/run"] = lambda h, b: (401, {}, {"error": "unauthorized"})
    assert main(["run", "--endpoint", "ep1", str(workflow(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "refused the API key" in err and "rpa_JOBKEY_123456" not in err
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert main(["run", "--endpoint", "ep1", str(workflow(tmp_path))]) == 2
    assert "RUNPOD_API_KEY is not set" in capsys.readouterr().err


# ------------------------------------------------------------------ inputs and outputs
def test_parse_set():
    assert jobclient.parse_set("6.inputs.text=a=b") == {"node_id": "6", "field": "inputs.text", "value": "a=b"}
    assert jobclient.parse_set("3.inputs.cfg=7.5")["value"] == 7.5
    assert jobclient.parse_set('3.inputs.names=["x"]')["value"] == ["x"]
    for bad in ("6.text=x", "6.inputs.text", "=x"):
        with pytest.raises(UsageError, match=r"NODE.inputs.FIELD=VALUE"):
            jobclient.parse_set(bad)


def test_parse_progress_shapes():
    # the handler's shape (handler/worker.py: runpod.serverless.progress_update)
    p = jobclient.parse_progress({"status": "running", "node_id": "3", "step": 4, "max": 20, "percent": 20.0})
    assert (p.completed, p.total, p.text) == (4, 20, "node 3")
    assert jobclient.parse_progress({"step": 2, "total": 8}).completed == 2
    assert jobclient.parse_progress({"percent": 0.5}).completed == 50
    assert jobclient.parse_progress("loading models").text == "loading models"
    assert jobclient.parse_progress(None) is None and jobclient.parse_progress({}) is None


def test_output_urls_with_other_schemes_are_refused(tmp_path):
    with pytest.raises(UsageError, match="file://"):
        jobclient.save_outputs({"outputs": [{"node_id": "1", "filename": "x", "url": "file:///etc/passwd"}]}, tmp_path)
    with pytest.raises(ComfyverError, match="not valid base64"):
        jobclient.save_outputs({"outputs": [{"node_id": "1", "filename": "x", "data": "%%%"}]}, tmp_path)
    assert not (tmp_path / "x").exists()


def test_bad_workflow_and_image(tmp_path, capsys):
    assert main(["run", "--local", "http://127.0.0.1:9", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["run", "--local", "http://127.0.0.1:9", str(tmp_path / "bad.json")]) == 2
    assert main(["run", "--local", "ftp://x", str(workflow(tmp_path))]) == 2


# ------------------------------------------------------------------ outputs from buckets (real emulators)
def test_outputs_from_s3_and_gcs(tmp_path, monkeypatch):
    import boto3
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from moto.server import ThreadedMotoServer

    from tests.handler import env

    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    moto.start()
    gcs = env.GCSEmulator("gcs-out")
    try:
        s3_url = f"http://127.0.0.1:{s3_port}"
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("BUCKET_ENDPOINT_URL", s3_url)
        monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "AKIATEST")
        monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "s3-secret-for-test")
        monkeypatch.setenv("BUCKET_NAME", "comfy-out")  # the buckets this user configured for outputs
        monkeypatch.setenv("GCS_BUCKET", "gcs-out")
        monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", f"127.0.0.1:{s3_port}")  # the signed URL's host
        s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="AKIATEST",
                          aws_secret_access_key="s3-secret-for-test", region_name="us-east-1")
        s3.create_bucket(Bucket="comfy-out")
        s3.put_object(Bucket="comfy-out", Key="jobs/j1/a.png", Body=PNG)
        s3.put_object(Bucket="comfy-out", Key="jobs/j1/b.png", Body=PNG * 2)
        signed = s3.generate_presigned_url("get_object", Params={"Bucket": "comfy-out", "Key": "jobs/j1/b.png"})
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
        monkeypatch.setenv("GCS_PROJECT", "test")
        storage.Client(project="test", credentials=AnonymousCredentials()).bucket("gcs-out") \
            .blob("comfy/outputs/j1/c.png").upload_from_string(PNG * 3)
        saved = jobclient.save_outputs({"outputs": [
            {"node_id": "9", "kind": "image", "filename": "a.png", "url": "s3://comfy-out/jobs/j1/a.png"},
            {"node_id": "9", "kind": "image", "filename": "b.png", "url": "s3://comfy-out/jobs/j1/b.png",
             "signed_url": signed},
            {"node_id": "10", "kind": "image", "filename": "c.png", "url": "gs://gcs-out/comfy/outputs/j1/c.png",
             "gcs_url": "gs://gcs-out/comfy/outputs/j1/c.png"},
        ]}, tmp_path / "out")
    finally:
        moto.stop()
        gcs.stop()
    assert [(s["node_id"], Path(s["path"]).read_bytes()) for s in saved] == [
        ("9", PNG), ("9", PNG * 2), ("10", PNG * 3)]
    assert [s["bytes"] for s in saved] == [len(PNG), 2 * len(PNG), 3 * len(PNG)]


def test_workflow_name_cannot_leave_the_version(tmp_path, monkeypatch, capsys):
    from tests.test_push import make_project

    make_project(tmp_path / "proj")
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--local", "http://127.0.0.1:9", "../../version.json", "--version", "demo"]) == 2
    assert "outside versions/demo/workflows" in capsys.readouterr().err


def test_start_form_hands_over_to_localrun(tmp_path, monkeypatch):
    """`comfyver run <id> [--into DIR] [-- args]` calls comfyver.realize.localrun.run_local(root, vid, into, comfy_args)."""
    import comfyver.realize.localrun

    from tests.test_push import make_project

    make_project(tmp_path / "proj")
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    calls = []
    monkeypatch.setattr(comfyver.realize.localrun, "run_local", lambda *a: calls.append(a) or 7)
    assert main(["run", "demo", "--into", str(tmp_path / "rz"), "--", "--port", "8190", "--cpu"]) == 7
    assert main(["run", "--into", "x", "demo"]) == 7
    assert calls == [(tmp_path / "proj", "demo", tmp_path / "rz", ["--port", "8190", "--cpu"]),
                     (tmp_path / "proj", "demo", Path("x"), [])]


def test_comfyui_args_only_with_the_start_form(tmp_path, capsys):
    assert main(["run", "--local", "http://127.0.0.1:9", str(workflow(tmp_path)), "--", "--cpu"]) == 2
    assert "ComfyUI arguments only go with `run <id>`" in capsys.readouterr().err
