"""`comfyver deploy` on RunPod's REST API v2, `comfyver releases`, `comfyver rollback`, and `deploy --test`
(deploy -> test on staging -> promote -> rollback) against tests/support/runpodv2.py, a stand-in written from
RunPod's published OpenAPI document (../shared/data/runpod-api/api-reference-v2_openapi.json), in front of
RunPod's job queue stand-in (tests/support/jobqueue.py) and the real handler with a real ComfyUI on the CPU.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import requests
from comfyver import cli
from comfyver.base import lockfile
from comfyver.ship import deploy

from tests.support import runpodv2
from tests.support.runpodv2 import RunPodV2, schema_errors
from tests.test_push import make_project

ROOT = Path(__file__).resolve().parents[1]
KEY = "rpa_V2KEY_0123456789abcdef"
IMG1 = "ghcr.io/acme/comfyui@sha256:" + "a1" * 32
IMG2 = "ghcr.io/acme/comfyui@sha256:" + "b2" * 32
IMG3 = "ghcr.io/acme/comfyui@sha256:" + "c3" * 32
DOC = runpodv2.load_document()


def main(argv: list[str]) -> int:
    """The real CLI entry point, with only this work's verbs registered (other verbs may be mid-change)."""
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["comfyver.cli.deploy", "comfyver.cli.releases", "comfyver.cli.rollback",
                           "comfyver.cli.test"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def project(root: Path, torch: str = "cu128") -> dict:
    lock = make_project(root)
    lock["python"]["torch"] = torch
    lockfile.write(root / "versions/demo/version.json", lock)
    return lockfile.read(root / "versions/demo/version.json")


@pytest.fixture
def v2(tmp_path, monkeypatch):
    srv = RunPodV2(KEY)
    srv.add_volume("vol1", "EU-RO-1")
    monkeypatch.setenv("RUNPOD_API_V2_URL", srv.url)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    srv.lock_data = project(tmp_path / "proj")
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    yield srv
    srv.close()


def create(capsys, name: str = "prod", image: str = IMG1, *extra: str) -> dict:
    rc, res = run_json(capsys, ["deploy", "demo", "--image", image, "--create", name, "--gpu-pool", "ADA_24", *extra])
    assert rc == 0, res
    return res


# ------------------------------------------------------------------ the stand-in against the document
def doc_route(method: str, path: str) -> str | None:
    """The document's path template that `path` matches with `method`, if any."""
    for template, ops in DOC["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in ops:
            return template
    return None


def request_schema(template: str, method: str) -> str:
    ref = DOC["paths"][template][method.lower()]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def test_every_call_the_client_makes_is_in_the_document_and_every_body_validates(v2, capsys):
    res = create(capsys, "prod", IMG1, "--network-volume", "vol1", "--env", "OUTPUT_MODE=base64",
                 "--registry-auth", "reg1", "--no-flashboot")
    eid = res["endpointId"]
    assert main(["deploy", "demo", "--image", IMG2, "--endpoint", eid, "--json"]) == 0
    assert main(["releases", eid, "--json"]) == 0
    assert main(["rollback", eid, "--json"]) == 0
    capsys.readouterr()
    # what deploy's model check asks of a volume (volume.open_volume reads v1's dataCenterId)
    assert deploy.RunPodV2().get_network_volume("vol1")["dataCenterId"] == "EU-RO-1"
    methods = {(r.method, doc_route(r.method, r.path)) for r in v2.requests}
    assert None not in {t for _, t in methods}, [(r.method, r.path) for r in v2.requests]
    assert methods == {("POST", "/v2/serverless"), ("GET", "/v2/serverless/{id}"), ("PATCH", "/v2/serverless/{id}"),
                       ("GET", "/v2/serverless/{id}/releases"), ("GET", "/v2/network-volumes/{id}")}
    bodies = [(r, request_schema(doc_route(r.method, r.path) or "", r.method)) for r in v2.requests if r.body]
    assert {s for _, s in bodies} == {"CreateEndpointRequest", "UpdateEndpointRequest"}
    for r, schema in bodies:
        assert schema_errors(DOC, schema, r.body) == [], (r.method, r.path, r.body)
    # the stand-in's answers have the document's response shapes
    auth = {"Authorization": f"Bearer {KEY}"}
    for path, schema in ((f"/v2/serverless/{eid}", "Endpoint"), (f"/v2/serverless/{eid}/releases",
                                                                  "ListEndpointReleasesResponse"),
                         ("/v2/serverless", "ListEndpointsResponse"), ("/v2/network-volumes/vol1", "NetworkVolume"),
                         ("/v2/serverless/nope", "ErrorResponse")):
        assert schema_errors(DOC, schema, requests.get(v2.url + path, headers=auth, timeout=10).json()) == [], path
    assert schema_errors(DOC, "ErrorResponse", requests.get(v2.url + "/v2/serverless", timeout=10).json()) == []


def test_the_stand_in_refuses_as_the_document_says(v2):
    auth = {"Authorization": f"Bearer {KEY}"}
    url = v2.url + "/v2/serverless"
    ok = {"name": "x", "type": "QUEUE", "image": IMG1, "gpu": {"pools": ["ADA_24"]},
          "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}}
    assert requests.post(url, json=ok, timeout=10).status_code == 401  # no bearer key
    assert requests.post(url, json=ok, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert requests.post(url, data=b"{not json", headers=auth, timeout=10).status_code == 400
    both = {**ok, "gpu": {"pools": ["ADA_24"], "minCudaVersion": "12.8", "allowedCudaVersions": ["12.8"]}}
    assert requests.post(url, json=both, headers=auth, timeout=10).status_code == 400
    no_name = {k: v for k, v in ok.items() if k != "name"}
    r = requests.post(url, json=no_name, headers=auth, timeout=10)
    assert r.status_code == 422 and any("name" in e for e in r.json()["errors"])
    assert requests.post(url, json={**ok, "bogus": 1}, headers=auth, timeout=10).status_code == 422
    created = requests.post(url, json=ok, headers=auth, timeout=10)
    assert created.status_code == 201
    eid = created.json()["id"]
    assert requests.patch(f"{url}/{eid}", json={"cpu": [{"id": "cpu5c", "vcpuCount": 4}]}, headers=auth,
                          timeout=10).status_code == 400
    assert requests.get(f"{url}/nope/releases", headers=auth, timeout=10).status_code == 404
    # scaling alone makes no release; an image does
    requests.patch(f"{url}/{eid}", json={"workers": {"max": 5}}, headers=auth, timeout=10).raise_for_status()
    requests.patch(f"{url}/{eid}", json={"image": IMG2}, headers=auth, timeout=10).raise_for_status()
    listing = requests.get(f"{url}/{eid}/releases", headers=auth, timeout=10).json()
    assert [r["version"] for r in listing["releases"]] == [2, 1] and listing["endpointVersion"] == 2
    assert listing["releases"][0]["diff"] == [{"field": "template.imageName", "old": IMG1, "new": IMG2}]


# ------------------------------------------------------------------ deploy, releases, rollback
def test_deploy_creates_then_updates_each_a_release(v2, capsys):
    lock = v2.lock_data
    digest = lockfile.lock_digest(lock)
    res = create(capsys, "prod", IMG1, "--network-volume", "vol1", "--env", "OUTPUT_MODE=base64")
    eid = res["endpointId"]
    assert res["created"] and res["imageDigest"] == "sha256:" + "a1" * 32 and res["lockDigest"] == digest
    assert res["minCudaVersion"] == "12.8" and res["networkVolumes"] == ["vol1"] and res["versionId"] == "demo"
    [post] = v2.requests_to("POST", "/v2/serverless")
    assert post.headers["Authorization"] == f"Bearer {KEY}"
    assert post.body["image"] == IMG1 and post.body["gpu"] == {"pools": ["ADA_24"], "count": 1, "minCudaVersion": "12.8"}
    assert post.body["networkVolumes"] == ["vol1"] and post.body["type"] == "QUEUE"
    env = post.body["env"]
    assert env["OUTPUT_MODE"] == "base64" and env[deploy.ENV_VERSION_ID] == "demo"
    assert env[deploy.ENV_LOCK_DIGEST] == digest and env[deploy.ENV_IMAGE] == IMG1
    assert "COMFYVER_VERSION_ID" not in env and "COMFYVER_LOCK_DIGEST" not in env  # the image's own, untouched

    rc, upd = run_json(capsys, ["deploy", "demo", "--image", IMG2, "--endpoint", eid])
    assert rc == 0 and not upd["created"] and upd["image"] == IMG2
    [patch] = v2.requests_to("PATCH", f"/v2/serverless/{eid}")
    assert patch.body["image"] == IMG2 and patch.body["gpu"] == {"minCudaVersion": "12.8", "allowedCudaVersions": []}
    assert patch.body["env"]["OUTPUT_MODE"] == "base64"  # PATCH replaces the env: the endpoint's keys are kept
    assert v2.endpoints[eid]["image"] == IMG2
    assert upd["release"]["version"] == 2 and upd["release"]["id"] != res["release"]["id"]

    rc, h = run_json(capsys, ["releases", eid])
    assert rc == 0 and h["live"] == upd["release"]["id"] and h["endpointVersion"] == 2
    assert [(r["version"], r["imageDigest"], r["live"]) for r in h["releases"]] == [
        (2, "sha256:" + "b2" * 32, True), (1, "sha256:" + "a1" * 32, False)]
    assert {(r["versionId"], r["lockDigest"]) for r in h["releases"]} == {("demo", digest)}
    assert all(r["createdAt"] for r in h["releases"])
    main(["releases", eid])
    table = capsys.readouterr().out
    assert "* " in table and upd["release"]["id"] in table and "a1a1a1a1a1a1" in table


def test_rollback_restores_the_previous_image_and_is_itself_a_release(v2, capsys):
    res = create(capsys, "prod", IMG1)
    eid = res["endpointId"]
    assert main(["deploy", "demo", "--image", IMG2, "--endpoint", eid]) == 0
    capsys.readouterr()
    rc, rb = run_json(capsys, ["rollback", eid])
    assert rc == 0 and rb["to"]["id"] == res["release"]["id"] and rb["from"]["image"] == IMG2
    assert v2.endpoints[eid]["image"] == IMG1
    new = rb["release"]
    assert new["version"] == 3 and new["live"] and new["image"] == IMG1 and new["note"] == f"rollback to {rb['to']['id']}"
    assert new["lockDigest"] == lockfile.lock_digest(v2.lock_data) and new["versionId"] == "demo"
    # the previous release now is release 2 (IMG2): `rollback` again goes there; --to names one by version
    rc, again = run_json(capsys, ["rollback", eid, "--to", "v1"])
    assert rc == 1 and "runs the same image and settings" in again["error"]
    rc, fwd = run_json(capsys, ["rollback", eid])
    assert rc == 0 and fwd["to"]["version"] == 2 and v2.endpoints[eid]["image"] == IMG2
    rc, h = run_json(capsys, ["releases", eid])
    assert [r["image"] for r in h["releases"]] == [IMG2, IMG1, IMG2, IMG1]


def test_rollback_errors(v2, capsys):
    eid = create(capsys, "prod", IMG1)["endpointId"]
    rc, res = run_json(capsys, ["rollback", eid])
    assert rc == 1 and "nothing to roll back to" in res["error"]
    assert main(["deploy", "demo", "--image", IMG2, "--endpoint", eid]) == 0
    capsys.readouterr()
    rc, res = run_json(capsys, ["rollback", eid, "--to", "rel_nope"])
    assert rc == 1 and "has no release 'rel_nope'" in res["error"] and "v1" in res["hint"]
    live = v2.live_release(eid)["id"]
    rc, res = run_json(capsys, ["rollback", eid, "--to", live])
    assert rc == 1 and "is the live release" in res["error"]
    assert v2.requests_to("PATCH", f"/v2/serverless/{eid}")[-1].body["image"] == IMG2  # nothing sent for those
    rc, res = run_json(capsys, ["rollback", "nope"])
    assert rc == 1 and "HTTP 404" in res["error"] and "no such id" in res["hint"]


def test_errors_401_404_and_a_tag_only_image(v2, capsys, monkeypatch):
    rc, res = run_json(capsys, ["deploy", "demo", "--image", "ghcr.io/acme/comfyui:v1", "--endpoint", "ep1"])
    assert rc == 2 and "names a tag, not a digest" in res["error"] and "comfyver push" in res["hint"]
    assert v2.requests == []
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG1, "--endpoint", "nope"])
    assert rc == 1 and "endpoint nope: RunPod answered HTTP 404: endpoint not found" in res["error"]
    rc, res = run_json(capsys, ["releases", "nope"])
    assert rc == 1 and "HTTP 404" in res["error"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG1, "--template", "tpl1"])
    assert rc == 2 and "--api v1" in res["hint"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG1, "--create", "x", "--gpu", "NVIDIA L40"])
    assert rc == 2 and "--gpu-pool" in res["hint"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG1, "--create", "x"])
    assert rc == 2 and "--gpu-pool is required" in res["error"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG1, "--endpoint", "ep1", "--test"])
    assert rc == 2 and "--staging" in res["error"]
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_WRONG_secret_value")
    rc = main(["deploy", "demo", "--image", IMG1, "--create", "x", "--gpu-pool", "ADA_24"])
    out = capsys.readouterr()
    assert rc == 1 and "RunPod answered HTTP 401: invalid bearer token" in out.err and "RUNPOD_API_KEY" in out.err
    assert "rpa_WRONG_secret_value" not in out.out + out.err
    rc, res = run_json(capsys, ["releases", "x"])
    assert rc == 1 and "HTTP 401" in res["error"]
    assert v2.endpoints == {}


def test_the_cuda_floor_is_the_lock_rule_and_a_cpu_lock_sets_none(v2, capsys, tmp_path, monkeypatch):
    text = (ROOT / "versions/example/uv.lock").read_text()
    from comfyver.lock import pylock

    assert deploy.min_cuda_version("pypi", pylock.locked_cuda(text)) == "13.0"
    assert deploy.min_cuda_version("pypi", (13, 2)) == "13.0"  # minor compatibility, as allowedCudaVersions
    assert deploy.min_cuda_version("cu121") == "12.1" and deploy.min_cuda_version("cpu") is None
    project(tmp_path / "cpu", torch="cpu")
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "cpu"))
    res = create(capsys, "cpu-lock", IMG1)
    assert res["minCudaVersion"] is None and "minCudaVersion" not in v2.requests_to("POST", "/v2/serverless")[0].body["gpu"]


def test_deploy_test_refuses_staging_equal_to_live_and_an_unknown_live_endpoint(v2, capsys):
    (Path(os.environ["COMFYVER_ROOT"]) / "versions/demo/tests").mkdir()
    (Path(os.environ["COMFYVER_ROOT"]) / "versions/demo/tests/t.json").write_text(json.dumps(
        {"input": {"workflow": {"1": {"class_type": "X", "inputs": {}}}}, "expect": {"status": "success"}}))
    eid = create(capsys, "prod", IMG1)["endpointId"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG2, "--endpoint", eid, "--test", "--staging", eid])
    assert rc == 2 and "is the live endpoint" in res["error"]
    stg = create(capsys, "stg", IMG1)["endpointId"]
    rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG2, "--endpoint", "nope", "--test", "--staging", stg])
    assert rc == 1 and "endpoint nope" in res["error"]
    assert v2.endpoints[stg]["image"] == IMG1 and v2.endpoints[eid]["image"] == IMG1  # nothing deployed


# ------------------------------------------------------------------ deploy -> test -> promote -> rollback, end to end
@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """RunPod's job queue stand-in in front of the real handler (the SDK's production worker loop) and a real
    ComfyUI on the CPU, serving version `demo` of a project made here."""
    from tests.handler import env
    from tests.support.jobqueue import JobQueue, handler_worker

    base = tmp_path_factory.mktemp("deploy-v2")
    lock = project(base / "proj")
    vdir = base / "proj/versions/demo"
    (vdir / "workflows").mkdir()
    (vdir / "workflows/invert.json").write_text(json.dumps(env.invert_workflow(0x204060, size=16)))
    (vdir / "tests").mkdir()
    (vdir / "tests/invert.json").write_text(json.dumps(
        {"input": {"workflow": "invert"},
         "expect": {"status": "success", "outputs": [{"node_id": "3", "kind": "image", "count": 1, "min_bytes": 1,
                                                      "max_bytes": 100000}]}}))
    home = env.comfy_tree(base)
    q = JobQueue()
    wenv = {"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
            "COMFYVER_VERSION_ID": "demo", "COMFYVER_LOCK_DIGEST": lockfile.lock_digest(lock),
            "COMFYUI_STATE_DIR": str(base / "state")}
    with handler_worker(q, wenv, base / "worker.log"):
        q.root, q.log_path = base / "proj", base / "worker.log"
        yield q
    q.close()


def test_deploy_test_promote_rollback_end_to_end(worker, tmp_path, monkeypatch, capsys):
    srv = RunPodV2(KEY)
    try:
        monkeypatch.setenv("RUNPOD_API_V2_URL", srv.url)
        monkeypatch.setenv("RUNPOD_API_KEY", KEY)
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", worker.url + "/v2")
        monkeypatch.setenv("COMFYVER_ROOT", str(worker.root))
        digest = lockfile.lock_digest(lockfile.read(worker.root / "versions/demo/version.json"))
        live = create(capsys, "prod", IMG1)["endpointId"]
        stg = create(capsys, "prod-staging", IMG1)["endpointId"]

        # a passing test: staging first, then the live endpoint
        rc = main(["deploy", "demo", "--image", IMG2, "--endpoint", live, "--test", "--staging", stg, "--poll", "0.2",
                   "--out", str(tmp_path / "out1")])
        out = capsys.readouterr().out
        assert rc == 0, (out, worker.log_path.read_text()[-3000:])
        assert "PASS invert" in out and "promoted: all 1 test(s) passed" in out
        patches = [r.path for r in srv.requests if r.method == "PATCH"]
        assert patches == [f"/v2/serverless/{stg}", f"/v2/serverless/{live}"]  # staging, then live
        assert srv.endpoints[live]["image"] == IMG2 and srv.endpoints[stg]["image"] == IMG2
        [job] = worker.jobs.values()  # the test ran as a job naming the version and its lock
        assert job["input"]["version_id"] == "demo" and job["input"]["lock_digest"] == digest
        assert job["status"] == "COMPLETED"
        promoted = srv.live_release(live)
        assert promoted["version"] == 2
        note = srv.endpoints[live]["env"][deploy.ENV_NOTE]
        assert note.startswith(f"promoted: 1 test(s) passed on staging {stg}")

        # a failing test: staging gets the image, the live endpoint's release stays as it is
        (worker.root / "versions/demo/tests/too-small.json").write_text(json.dumps(
            {"input": {"workflow": "invert"},
             "expect": {"status": "success", "outputs": [{"node_id": "3", "kind": "image", "max_bytes": 10}]}}))
        before = [r.path for r in srv.requests if r.method == "PATCH"]
        rc, res = run_json(capsys, ["deploy", "demo", "--image", IMG3, "--endpoint", live, "--test", "--staging", stg,
                                    "--poll", "0.2", "--out", str(tmp_path / "out2")])
        assert rc == 1 and res["promoted"] is False and res["live"] is None
        by_name = {r["name"]: r for r in res["tests"]["results"]}
        assert by_name["invert"]["passed"] and not by_name["too-small"]["passed"]
        assert "more than max_bytes 10" in by_name["too-small"]["reasons"][0]
        assert [r.path for r in srv.requests if r.method == "PATCH"][len(before):] == [f"/v2/serverless/{stg}"]
        assert srv.endpoints[live]["image"] == IMG2 and srv.live_release(live) == promoted
        assert srv.endpoints[stg]["image"] == IMG3
        rc = main(["deploy", "demo", "--image", IMG3, "--endpoint", live, "--test", "--staging", stg, "--poll", "0.2",
                   "--out", str(tmp_path / "out3")])
        out = capsys.readouterr()
        assert rc == 1 and "FAIL too-small" in out.out and "more than max_bytes 10" in out.out
        assert "the live endpoint is unchanged" in out.err and srv.endpoints[live]["image"] == IMG2

        # rollback: the live endpoint goes back to the release before the promotion
        rc, rb = run_json(capsys, ["rollback", live])
        assert rc == 0 and rb["from"]["id"] == promoted["id"] and rb["to"]["image"] == IMG1
        assert srv.endpoints[live]["image"] == IMG1 and srv.live_release(live)["version"] == 3
        rc, h = run_json(capsys, ["releases", live])
        assert [(r["version"], r["image"], r["live"]) for r in h["releases"]] == [
            (3, IMG1, True), (2, IMG2, False), (1, IMG1, False)]
        assert h["releases"][1]["note"].startswith("promoted:")
    finally:
        srv.close()
