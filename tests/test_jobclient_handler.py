"""The full loop on this machine: `comfyver run --local` -> the runpod SDK's local API
(`python -m handler --rp_serve_api`) -> the real handler -> a real ComfyUI on the CPU -> outputs in --out.

The SDK's local API has no progress stream and no cancel route (see comfyver.ship.jobclient), so here
Ctrl-C stops waiting and exits 130 while the worker finishes the job; progress and cancel against
RunPod's job API are covered in tests/test_jobclient.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from comfyver.cli import main

from tests.handler import env
from tests.support.procs import Watched

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def handler_api(tmp_path_factory):
    base = tmp_path_factory.mktemp("run-loop")
    home = env.comfy_tree(base)
    api = env.LocalAPI({"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
                        "COMFYVER_VERSION_ID": "loop-test"}, base / "api.log")
    api.home = home
    yield api
    api.stop()


def write(tmp_path: Path, wf: dict) -> Path:
    p = tmp_path / "workflow.json"
    p.write_text(json.dumps(wf))
    return p


def rgb_of(path: Path):
    from PIL import Image

    im = Image.open(io.BytesIO(path.read_bytes()))
    return im.size, im.convert("RGB").getpixel((0, 0))


def test_submit_and_get_outputs(handler_api, tmp_path, capsys):
    wf = write(tmp_path, env.invert_workflow(0x000000, size=32))
    out = tmp_path / "out"
    rc = main(["run", "--local", handler_api.url, str(wf), "--set", "1.inputs.color=3368601",  # 0x336699
               "--output-mode", "base64", "--out", str(out), "--json", "--poll", "0.2"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
    [saved] = res["outputs"]
    assert saved["node_id"] == "3" and saved["kind"] == "image"
    size, rgb = rgb_of(Path(saved["path"]))
    assert size == (32, 32)
    assert all(abs(a - b) <= 1 for a, b in zip(rgb, (0xFF - 0x33, 0xFF - 0x66, 0xFF - 0x99)))
    assert Path(saved["path"]).parent == out


def test_version_check_and_workflow_from_the_version(handler_api, tmp_path, monkeypatch, capsys):
    from tests.test_push import make_project

    make_project(tmp_path / "proj", vid="loop-test")
    (tmp_path / "proj/versions/loop-test/workflows").mkdir()
    (tmp_path / "proj/versions/loop-test/workflows/invert.json").write_text(json.dumps(env.invert_workflow(size=8)))
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "--local", handler_api.url, "invert", "--version", "loop-test", "--out", "out", "--json",
               "--poll", "0.2"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(res["outputs"]) == 1 and (tmp_path / "out").is_dir()
    (tmp_path / "other.json").write_text(json.dumps(env.invert_workflow(size=8)))
    rc = main(["run", "--local", handler_api.url, "other.json", "--version", "sdxl-prod", "--poll", "0.2"])
    err = capsys.readouterr().err
    assert rc == 1 and "'sdxl-prod'" in err and "loop-test" in err


def test_node_failure_exit_1(handler_api, tmp_path, capsys):
    wf = env.invert_workflow(size=8)
    wf["2"] = {"class_type": "ComfyverFail", "inputs": {"image": ["1", 0], "message": "deliberate failure 42"}}
    rc = main(["run", "--local", handler_api.url, str(write(tmp_path, wf)), "--out", str(tmp_path / "out"),
               "--poll", "0.2"])
    cap = capsys.readouterr()
    assert rc == 1 and "FAILED" in cap.out
    # the handler's structured error (sent as JSON text), shown with its node
    assert "deliberate failure 42" in cap.err and "(node 2)" in cap.err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_waiting_on_a_long_job(handler_api, tmp_path):
    wf = write(tmp_path, env.slow_workflow(seconds=6, steps=12))
    envv = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    t0 = time.monotonic()
    proc = Watched([sys.executable, "-m", "comfyver", "run", "--local", handler_api.url, str(wf),
                    "--out", str(tmp_path / "out"), "--poll", "0.2"], env=envv)
    proc.wait_line("submitted job", timeout=5)  # Ctrl-C lands while following, not during start-up
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - t0 < 5.5  # did not wait for the 6 s job
    assert "CANCELLED" in out and "stopped waiting" in err
    assert not (tmp_path / "out").exists()
    time.sleep(5)  # the local worker runs one job at a time: let the slow one finish
