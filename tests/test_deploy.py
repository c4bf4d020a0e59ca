"""`comfyver deploy` against a local server answering RunPod's REST API in its documented shapes.

RunPod REST API (base https://rest.runpod.io/v1, `Authorization: Bearer <key>`):
- create template:      POST  /templates              https://docs.runpod.io/api-reference/templates/POST/templates
- update template:      PATCH /templates/{templateId}  https://docs.runpod.io/api-reference/templates/PATCH/templates/templateId
- create endpoint:      POST  /endpoints              https://docs.runpod.io/api-reference/endpoints/POST/endpoints
- get endpoint:         GET   /endpoints/{endpointId} https://docs.runpod.io/api-reference/endpoints/GET/endpoints/endpointId
- registry auth:        POST  /containerregistryauth  https://docs.runpod.io/api-reference/container-registry-auths/POST/containerregistryauth
"""

from __future__ import annotations

import json

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.ship import deploy

from tests.test_push import make_project

KEY = "rpa_TESTKEY_0123456789"
IMAGE = "ghcr.io/acme/comfyui@sha256:" + "ab" * 32

def main(argv: list[str]) -> int:
    """The real CLI entry point, with only this module's verb registered (other verbs may be mid-change)."""
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["comfyver.cli.deploy"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved



@pytest.fixture
def runpod(http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("RUNPOD_REST_URL", http_server.url + "/v1")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    lock = make_project(tmp_path / "proj")
    lock["python"]["torch"] = "cu128"
    lockfile.write(tmp_path / "proj/versions/demo/version.json", lock)
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    return http_server


def sent(server) -> list[tuple[str, str, dict | None]]:
    return [(r["method"], r["path"], json.loads(r["body"]) if r["body"] else None) for r in server.requests]


def echo_template(handler, body):
    req = json.loads(body)
    return 200, {}, {"id": "tpl123", "isServerless": True, **req}


def test_update_via_endpoint(runpod, capsys):
    runpod.routes["/v1/endpoints/ep42"] = {"id": "ep42", "name": "prod", "templateId": "tpl9", "workersMax": 3}
    runpod.routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    rc = main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--endpoint", "ep42", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == {"templateId": "tpl9", "endpointId": "ep42", "image": IMAGE,
                                                   "networkVolumeId": None, "warnings": []}
    assert sent(runpod) == [("GET", "/v1/endpoints/ep42", None),
                            ("PATCH", "/v1/templates/tpl9", {"imageName": IMAGE})]
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in runpod.requests)


def test_update_template_directly_with_registry_auth(runpod):
    runpod.routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    assert main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--template", "tpl9", "--registry-auth", "cra77"]) == 0
    assert sent(runpod) == [("PATCH", "/v1/templates/tpl9", {"imageName": IMAGE, "containerRegistryAuthId": "cra77"})]


def test_create_template_endpoint_and_registry_auth(runpod, monkeypatch, capsys):
    monkeypatch.setenv("REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("REGISTRY_PASSWORD", "registry-secret-xyz")
    runpod.routes["/v1/containerregistryauth"] = {"id": "cra1", "name": "sdxl-prod-registry"}
    runpod.routes["/v1/templates"] = echo_template
    runpod.routes["/v1/endpoints"] = lambda h, b: (200, {}, {"id": "ep-new", **json.loads(b)})
    rc = main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--create", "sdxl-prod", "--gpu", "NVIDIA GeForce RTX 4090",
               "--gpu", "NVIDIA RTX A6000", "--workers-min", "1", "--workers-max", "4", "--idle-timeout", "30",
               "--network-volume", "vol5", "--env", "OUTPUT_MODE=gcs"])
    out = capsys.readouterr()
    assert rc == 0 and "endpoint ep-new" in out.out and "comfyver run --endpoint ep-new" in out.out
    assert "registry-secret-xyz" not in out.out + out.err
    assert sent(runpod) == [
        ("POST", "/v1/containerregistryauth", {"name": "sdxl-prod-registry", "username": "robot",
                                               "password": "registry-secret-xyz"}),
        ("POST", "/v1/templates", {"name": "sdxl-prod", "imageName": IMAGE, "isServerless": True,
                                   "containerDiskInGb": 20, "env": {"OUTPUT_MODE": "gcs"},
                                   "containerRegistryAuthId": "cra1"}),
        ("POST", "/v1/endpoints", {"name": "sdxl-prod", "templateId": "tpl123", "computeType": "GPU",
                                   "gpuTypeIds": ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"], "gpuCount": 1,
                                   "workersMin": 1, "workersMax": 4, "idleTimeout": 30, "flashboot": True,
                                   "networkVolumeId": "vol5", "allowedCudaVersions": ["12.8", "12.9", "13.0"]}),
    ]


def test_allowed_cuda_versions():
    assert deploy.allowed_cuda_versions("cu121") == ["12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8",
                                                     "12.9", "13.0"]
    assert deploy.allowed_cuda_versions("cu118")[0] == "11.8"
    assert deploy.allowed_cuda_versions("cpu") is None
    with pytest.raises(ComfyverError, match="cu141"):
        deploy.allowed_cuda_versions("cu141")


def test_the_cuda_floor_comes_from_what_the_uv_lock_holds():
    """The example locks PyPI's cu13 wheels (nvidia-cuda-runtime 13.0): RunPod must not schedule it on a
    CUDA 12.8 host, whatever the profile's name says (the label used to say cu128)."""
    from pathlib import Path

    from comfyver.lock import pylock

    text = (Path(__file__).resolve().parents[1] / "versions" / "example" / "uv.lock").read_text()
    assert pylock.locked_cuda(text) == (13, 0)
    assert deploy.allowed_cuda_versions("pypi", pylock.locked_cuda(text)) == ["13.0"]
    assert deploy.allowed_cuda_versions("pypi", (13, 2)) == ["13.0"]  # minor compatibility
    assert "uv.lock pins CUDA 13.0" in pylock.profile_problem({"python": {"torch": "cu128"}}, text)
    assert pylock.profile_problem({"python": {"torch": "pypi"}}, text) is None
    assert pylock.driver_floor((13, 0)) == "580" and pylock.driver_floor((12, 8)) == "525"


@pytest.mark.parametrize("status,needle", [(401, "refused the API key"), (404, "no such id"),
                                           (400, "rejected the request")])
def test_api_errors_are_clear_and_not_retried(runpod, capsys, status, needle):
    runpod.routes["/v1/templates/tpl9"] = lambda h, b: (status, {}, {"error": "bad thing happened"})
    rc = main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--template", "tpl9"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"template tpl9: RunPod answered HTTP {status}: bad thing happened" in err and needle in err
    assert KEY not in err
    assert len(runpod.requests) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried(runpod, status):
    answers = [(status, {"Retry-After": "0"}, {"error": "slow down"})] * 2
    def route(h, b):
        return answers.pop(0) if answers else (200, {}, {"id": "tpl9", **json.loads(b)})
    runpod.routes["/v1/templates/tpl9"] = route
    api = deploy.RunPodREST(backoff=0.01)
    assert deploy.update_image(api, IMAGE, template_id="tpl9")["templateId"] == "tpl9"
    assert len(runpod.requests) == 3


def test_persistent_429_gives_up_with_hint(runpod):
    runpod.routes["/v1/endpoints/ep1"] = lambda h, b: (429, {}, {"error": "rate limited"})
    api = deploy.RunPodREST(backoff=0.01, retries=2)
    with pytest.raises(ComfyverError) as exc:
        deploy.update_image(api, IMAGE, endpoint_id="ep1")
    assert "endpoint ep1: RunPod answered HTTP 429" in exc.value.message and "wait a minute" in exc.value.hint
    assert len(runpod.requests) == 3


def test_missing_key_and_bad_inputs(runpod, monkeypatch, capsys):
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--template", "tpl9"]) == 2
    assert "RUNPOD_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    assert main(["deploy", "demo", "--api", "v1", "--image", "not an image", "--template", "tpl9"]) == 2
    assert "'not an image'" in capsys.readouterr().err
    assert main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--template", "../admin"]) == 2
    assert main(["deploy", "demo", "--api", "v1", "--image", IMAGE, "--create", "x"]) == 2
    assert "--gpu is required" in capsys.readouterr().err
    assert runpod.requests == []
    with pytest.raises(UsageError):
        deploy.RunPodREST(base="file:///etc")


def test_stale_tag_warning(runpod, tmp_path, capsys):
    lock = lockfile.read(tmp_path / "proj/versions/demo/version.json")
    current = f"demo-{lockfile.lock_digest(lock)[:12]}"
    assert deploy.stale_tag_warning("demo", lock, f"ghcr.io/acme/comfyui:{current}") is None
    assert deploy.stale_tag_warning("demo", lock, "ghcr.io/acme/comfyui:v1") is None
    runpod.routes["/v1/templates/tpl9"] = lambda h, b: (200, {}, {"id": "tpl9", **json.loads(b)})
    old = "ghcr.io/acme/comfyui:demo-0123456789ab@sha256:" + "cd" * 32
    assert main(["deploy", "demo", "--api", "v1", "--image", old, "--template", "tpl9"]) == 0
    err = capsys.readouterr().err
    assert "'demo-0123456789ab' was pushed from another lock of 'demo'" in err and current in err


@pytest.mark.parametrize("ref", ["ghcr.io/acme/comfyui:v1\n", "ghcr.io/acme/comfyui@sha256:" + "a" * 64 + "\n"])
def test_an_image_reference_with_a_trailing_newline_is_refused(ref):
    """The reference goes to RunPod as the template's imageName: matched to its very end (issue 24 L12)."""
    with pytest.raises(UsageError, match="is not REGISTRY/IMAGE"):
        deploy.check_image(ref)
    assert deploy.check_image(ref.rstrip("\n")) == ref.rstrip("\n")
