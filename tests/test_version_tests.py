"""A version's tests (`versions/<id>/tests/*.json`) and `comfyver test`: the file format and its errors, the
checks, and runs against the real handler with a real ComfyUI on the CPU (the SDK's local API, one worker for
the module; and `--dir`, which starts the handler on a tree itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError
from comfyver.ship import jobclient, versiontests

from tests.handler import env
from tests.test_push import make_project

PASSING = {"input": {"workflow": "invert"},
           "expect": {"status": "success", "outputs": [{"node_id": "3", "kind": "image", "count": 1, "min_bytes": 100,
                                                        "max_bytes": 100000}]}}


def main(argv: list[str]) -> int:
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["comfyver.cli.test"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main([*argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def make_version(root: Path, tests: dict[str, object]) -> Path:
    make_project(root)
    vdir = root / "versions/demo"
    (vdir / "workflows").mkdir(exist_ok=True)
    (vdir / "workflows/invert.json").write_text(json.dumps(env.invert_workflow(0x336699, size=16)))
    (vdir / "tests").mkdir(exist_ok=True)
    for name, body in tests.items():
        (vdir / "tests" / f"{name}.json").write_text(body if isinstance(body, str) else json.dumps(body))
    return vdir


# ------------------------------------------------------------------ the format
@pytest.mark.parametrize("body,needle", [
    ("{not json", "not valid JSON"),
    ({"input": {"workflow": "invert"}}, "'expect' is a required property"),
    ({"input": {"workflow": "invert"}, "expect": {"status": "ok"}}, "expect/status: 'ok' is not one of"),
    ({"input": {"workflow": "invert", "version_id": "x"}, "expect": {"status": "success"}},
     "input.version_id: set by comfyver test"),
    ({"input": {"workflow": "nope"}, "expect": {"status": "success"}}, "input.workflow 'nope': no workflows/nope.json"),
    ({"input": {"workflow": "../tests/bad"}, "expect": {"status": "success"}}, "is outside versions/demo/workflows"),
    ({"input": {"workflow": "invert"}, "expect": {"status": "success", "outputs": [
        {"node_id": "3", "min_bytes": 10, "max_bytes": 5}]}}, "min_bytes 10 > max_bytes 5"),
    ({"input": {"workflow": "invert"}, "expect": {"status": "success", "outputs": [
        {"node_id": "3", "sha256": "xyz"}]}}, "expect/outputs/0/sha256"),
    ({"input": {"workflow": "invert"}, "expect": {"status": "error", "outputs": [{"node_id": "3"}]}},
     "a test expecting an error produces no outputs"),
    ({"input": {"workflow": "invert"}, "expect": {"status": "success"}, "retries": 3}, "'retries' was unexpected"),
])
def test_a_bad_test_file_is_an_error_naming_it(tmp_path, monkeypatch, capsys, body, needle):
    make_version(tmp_path / "proj", {"good": PASSING, "bad": body})
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    rc, res = run_json(capsys, ["test", "demo", "--local", "http://127.0.0.1:9"])
    assert rc == 1 and needle in res["error"], res
    assert str(tmp_path / "proj/versions/demo/tests/bad.json") in res["error"] and "docs/ship.md" in res["hint"]


def test_no_tests_and_an_unknown_test(tmp_path, monkeypatch, capsys):
    make_version(tmp_path / "proj", {})
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    rc, res = run_json(capsys, ["test", "demo", "--local", "http://127.0.0.1:9"])
    assert rc == 1 and "version demo has no tests" in res["error"]
    (tmp_path / "proj/versions/demo/tests/a.json").write_text(json.dumps(PASSING))
    rc, res = run_json(capsys, ["test", "demo", "--local", "http://127.0.0.1:9", "--only", "b"])
    assert rc == 2 and "no test b" in res["error"] and "a" in res["hint"]


def test_the_job_names_the_version_and_its_lock(tmp_path):
    lock = make_project(tmp_path / "proj")
    make_version(tmp_path / "proj", {"a": PASSING})
    [t] = versiontests.load_tests(tmp_path / "proj", "demo")
    assert t.job_input["version_id"] == "demo" and t.job_input["lock_digest"] == lockfile.lock_digest(lock)
    assert t.job_input["workflow"]["3"]["class_type"] == "SaveImage" and t.name == "a"


def test_the_checks_say_why(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"x" * 50)
    test = versiontests.VersionTest("t", tmp_path / "t.json", {}, versiontests.Expectation("success", [
        versiontests.ExpectedOutput("3", "image", count=2, min_bytes=60),
        versiontests.ExpectedOutput("9", sha256="0" * 64),
        versiontests.ExpectedOutput("3", "image", max_bytes=10, sha256="0" * 64)]))
    done = jobclient.JobResult("j1", "COMPLETED", files=[{"node_id": "3", "kind": "image", "path": str(png), "bytes": 50}])
    reasons = versiontests.check(test, done)
    assert reasons == ["node 3 image: 1 outputs, expected 2", "node 3 image: a.png is 50 bytes, fewer than min_bytes 60",
                       "node 9: no output (the job produced 3:image)",
                       "node 3 image: a.png is 50 bytes, more than max_bytes 10",
                       "node 3 image: a.png has sha256 " + __import__("hashlib").sha256(b"x" * 50).hexdigest()[:16]
                       + "..., expected 0000000000000000..."]
    failed = jobclient.JobResult("j2", "FAILED", error={"message": "boom", "node_id": "2"})
    assert versiontests.check(test, failed) == ["job FAILED: boom (node 2)"]
    err = versiontests.VersionTest("e", tmp_path / "e.json", {}, versiontests.Expectation("error", error_contains="boom"))
    assert versiontests.check(err, failed) == []
    assert versiontests.check(err, done) == ["expected the job to fail, it completed"]
    other = jobclient.JobResult("j3", "FAILED", error="other")
    assert versiontests.check(err, other) == ["expected an error containing 'boom', got: other"]


# ------------------------------------------------------------------ against the real handler
@pytest.fixture(scope="module")
def handler_api(tmp_path_factory):
    """The SDK's local API serving the real handler on a ComfyUI tree, as version `demo` of a project made here."""
    base = tmp_path_factory.mktemp("version-tests")
    lock = make_project(base / "proj")
    home = env.comfy_tree(base)
    api = env.LocalAPI({"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
                        "COMFYVER_VERSION_ID": "demo", "COMFYVER_LOCK_DIGEST": lockfile.lock_digest(lock),
                        "COMFYUI_STATE_DIR": str(base / "state")}, base / "api.log")
    api.home, api.root = home, base / "proj"
    yield api
    api.stop()


def test_passing_failing_and_deterministic_tests_on_a_worker(handler_api, tmp_path, monkeypatch, capsys):
    root = handler_api.root
    make_version(root, {
        "invert": PASSING,
        "unknown-node": {"input": {"workflow": {"1": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}}},
                         "expect": {"status": "error", "error_contains": "NoSuchNodeAnywhere"}},
        "wrong-hash": {"input": {"workflow": "invert"},
                       "expect": {"status": "success", "outputs": [{"node_id": "3", "sha256": "0" * 64}]}},
    })
    monkeypatch.setenv("COMFYVER_ROOT", str(root))
    rc, res = run_json(capsys, ["test", "demo", "--local", handler_api.url, "--poll", "0.2", "--out", str(tmp_path / "o")])
    assert rc == 1 and res["passed"] is False and res["counts"] == {"passed": 2, "failed": 1}, res
    by = {r["name"]: r for r in res["results"]}
    assert by["invert"]["passed"] and by["unknown-node"]["passed"] and by["invert"]["status"] == "COMPLETED"
    [wrong] = by["wrong-hash"]["reasons"]
    assert "has sha256" in wrong and "expected 0000000000000000" in wrong
    sha = by["invert"]["outputs"][0]["sha256"]
    assert by["wrong-hash"]["outputs"][0]["sha256"] == sha  # the same CPU job gives the same bytes
    assert Path(by["invert"]["outputs"][0]["path"]).parent == tmp_path / "o" / "invert"

    (root / "versions/demo/tests/right-hash.json").write_text(json.dumps(
        {"input": {"workflow": "invert"}, "expect": {"status": "success", "outputs": [{"node_id": "3", "sha256": sha}]}}))
    rc = main(["test", "demo", "--local", handler_api.url, "--poll", "0.2", "--only", "right-hash", "--only", "invert"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS right-hash" in out and "PASS invert" in out and "2/2 test(s) passed" in out


def test_a_worker_running_another_lock_fails_the_test(handler_api, monkeypatch, capsys):
    root = handler_api.root
    make_version(root, {"invert": PASSING})
    lock = lockfile.read(root / "versions/demo/version.json")
    lock["comfyui"]["original"]["ref"] = "v0.3.76"  # another state of the version than the worker runs
    lockfile.write(root / "versions/demo/version.json", lock)
    monkeypatch.setenv("COMFYVER_ROOT", str(root))
    try:
        rc = main(["test", "demo", "--local", handler_api.url, "--poll", "0.2", "--only", "invert"])
        out = capsys.readouterr().out
        assert rc == 1 and "FAIL invert" in out and "does not match the lock this worker runs" in out
    finally:
        make_project(root)


def test_dir_starts_a_worker_on_the_realized_tree(handler_api, tmp_path, monkeypatch, capsys):
    make_version(tmp_path / "proj", {"invert": PASSING})
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    rc, res = run_json(capsys, ["test", "demo", "--dir", str(handler_api.home), "--poll", "0.2",
                                "--out", str(tmp_path / "o")])
    assert rc == 0 and res["results"][0]["passed"], (res, (tmp_path / "o/worker.log").read_text()[-3000:])
    assert res["target"].startswith("local worker http://127.0.0.1:")
    rc, res = run_json(capsys, ["test", "demo", "--dir", str(tmp_path)])
    assert rc == 2 and "not a realized ComfyUI tree" in res["error"]


def test_load_test_errors_are_comfyver_errors(tmp_path):
    vdir = make_version(tmp_path / "proj", {"x": {"input": {}, "expect": {"status": "success"}}})
    with pytest.raises(ComfyverError, match=r"x\.json: input: 'workflow' is a required property"):
        versiontests.load_test(vdir / "tests/x.json", vdir, "demo", "0" * 64)


# ------------------------------------------------------------------ a first test written from a workflow
def ui_invert(bypass_second_save: bool = True) -> dict:
    """The invert workflow as the editor saves it, with a second SaveImage that is bypassed (mode 4)."""
    return {"nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE",
                                                                              "links": [1]}],
         "widgets_values": [16, 16, 1, 0x336699]},
        {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2, 3, 4]}], "widgets_values": []},
        {"id": 7, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
         "outputs": [], "widgets_values": ["first"]},
        {"id": 9, "type": "SaveImage", "mode": 4 if bypass_second_save else 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 3}], "outputs": [], "widgets_values": ["skipped"]},
        {"id": 11, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
         "outputs": [], "widgets_values": []},  # a preview: not a saved output, not expected
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 7, 0, "IMAGE"], [3, 2, 0, 9, 0, "IMAGE"], [4, 2, 0, 11, 0, "IMAGE"]]}


def test_first_test_expects_a_file_of_each_active_core_save_node():
    t = versiontests.first_test(ui_invert(), "ui.json")
    assert t["input"] == {"workflow": "ui.json"} and t["expect"]["status"] == "success"
    assert t["expect"]["outputs"] == [{"node_id": "7", "kind": "image", "min_bytes": 1}]  # not the bypassed 9
    assert [o["node_id"] for o in versiontests.first_test(ui_invert(False), "ui.json")["expect"]["outputs"]] == ["7", "9"]
    on_event = ui_invert()
    on_event["nodes"][3]["mode"] = 3  # "on trigger": the worker runs it
    assert [o["node_id"] for o in versiontests.first_test(on_event, "ui.json")["expect"]["outputs"]] == ["7", "9"]
    with pytest.raises(versiontests.NoFirstTest, match="subgraphs, which the worker refuses") as e:
        versiontests.first_test({**ui_invert(), "definitions": {"subgraphs": [{"id": "s1"}]}}, "sub.json")
    assert "API format" in (e.value.hint or "")
    api = versiontests.first_test(env.invert_workflow(), "invert.json")
    assert api["expect"]["outputs"] == [{"node_id": "3", "kind": "image", "min_bytes": 1}]
    assert "add counts" in api["description"]


def test_first_tests_written_by_lock_pass_on_the_worker_and_an_existing_test_is_kept(handler_api, tmp_path,
                                                                                        monkeypatch, capsys):
    """lock --write-tests' files are tests `comfyver test` runs: the next stage passes on them."""
    root = handler_api.root
    vdir = make_version(root, {})
    (vdir / "workflows/ui.json").write_text(json.dumps(ui_invert()))
    (vdir / "tests/invert.json").write_text(json.dumps(PASSING))
    (vdir / "workflows/sub.json").write_text(json.dumps({**ui_invert(), "definitions": {"subgraphs": [{"id": "s"}]}}))
    written, kept, skipped = versiontests.write_first_tests(
        root, "demo", ["workflows/invert.json", "workflows/ui.json", "workflows/sub.json"])
    assert written == ["tests/ui.json"] and kept == ["tests/invert.json"]
    assert len(skipped) == 1 and "workflows/sub.json" in skipped[0] and not (vdir / "tests/sub.json").exists()
    assert not [p for p in (vdir / "tests").iterdir() if p.name.startswith(".")]  # no part file left
    assert json.loads((vdir / "tests/invert.json").read_text()) == PASSING  # kept as it was
    monkeypatch.setenv("COMFYVER_ROOT", str(root))
    try:
        rc, res = run_json(capsys, ["test", "demo", "--local", handler_api.url, "--poll", "0.2", "--only", "ui",
                                    "--out", str(tmp_path / "o")])
        assert rc == 0 and res["results"][0]["passed"], json.dumps(res)
        assert [o["node_id"] for o in res["results"][0]["outputs"]] == ["7"]
    finally:
        (vdir / "tests/ui.json").unlink()
