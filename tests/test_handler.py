"""The RunPod handler against a real ComfyUI on the CPU: outputs of every kind, validation, overrides, inputs,
UI-format workflows, timeout, cancellation and ComfyUI faults (websocket drop, kill -9)."""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from handler.settings import Settings
from handler.worker import Worker
from tests.handler import env


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return env.shared_worker(tmp_path_factory.mktemp("handler-comfy"))


def run_job(w, job_input, job_id="job-1"):
    return env.run(w.handle({"id": job_id, "input": job_input}))


def pixel(data: bytes):
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    return im.size, im.convert("RGB").getpixel((0, 0))


def close_to(rgb, want):
    return all(abs(a - b) <= 1 for a, b in zip(rgb, want))


def png_b64(rgb=(10, 200, 30), size=(8, 8)) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def E(r) -> dict:
    """The structured error of a result: RunPod's `error` is a string holding a JSON object."""
    return json.loads(r["error"])


def ok(r):
    assert "error" not in r, json.dumps(r, indent=1)[:3000]
    assert r["status"] == "success"
    return r


def test_invert_image_base64(worker):
    r = ok(run_job(worker, {"workflow": env.invert_workflow(0x336699), "output_mode": "base64"}))
    [o] = r["outputs"]
    assert o["node_id"] == "3" and o["kind"] == "image" and o["content_type"] == "image/png"
    data = base64.b64decode(o["data"])
    assert o["size"] == len(data)
    size, rgb = pixel(data)
    assert size == (64, 64) and close_to(rgb, (0xFF - 0x33, 0xFF - 0x66, 0xFF - 0x99))
    assert r["version_id"] == "test-version"
    # delivered files are removed from ComfyUI's output folder once the next job is delivered (ComfyUI's
    # cache may name them again until then)
    first = worker.settings.output_dir / o["filename"]
    ok(run_job(worker, {"workflow": env.invert_workflow(0x112233), "output_mode": "base64"}))
    assert not first.exists()


def test_every_output_kind(worker):
    wf = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 3, "color": 0xFF0000}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "anim", "fps": 6.0,
                                                         "lossless": True, "quality": 80, "method": "fastest"}},
        "3": {"class_type": "ComfyverSaveText", "inputs": {"text": "hello from comfyui", "filename_prefix": "t/x"}},
        "4": {"class_type": "ComfyverSaveTone", "inputs": {"hz": 440, "filename_prefix": "a/tone"}},
        "5": {"class_type": "ComfyverSaveMesh", "inputs": {"filename_prefix": "m/mesh"}},
    }
    r = ok(run_job(worker, {"workflow": wf, "output_mode": "base64"}))
    by = {(o["node_id"], o["kind"]): o for o in r["outputs"]}
    anim = by[("2", "video")]
    assert anim["content_type"] == "image/webp" and base64.b64decode(anim["data"])[8:12] == b"WEBP"
    assert by[("3", "text")]["text"] == "hello from comfyui"
    text_file = next(o for o in r["outputs"] if o["node_id"] == "3" and "data" in o)
    assert text_file["filename"].startswith("t/") and base64.b64decode(text_file["data"]) == b"hello from comfyui"
    tone = by[("4", "audio")]
    assert tone["content_type"] == "audio/x-wav" and base64.b64decode(tone["data"])[:4] == b"RIFF"
    mesh = by[("5", "3d")]
    assert mesh["content_type"] == "model/gltf-binary" and base64.b64decode(mesh["data"])[:4] == b"glTF"


def test_overrides_both_forms(worker):
    wf = env.invert_workflow(0x000000)
    r = ok(run_job(worker, {"workflow": wf, "output_mode": "base64",
                            "overrides": [{"node_id": "1", "field": "inputs.color", "value": 0x102030}]}))
    assert close_to(pixel(base64.b64decode(r["outputs"][0]["data"]))[1], (0xEF, 0xDF, 0xCF))
    r = ok(run_job(worker, {"workflow": json.dumps(wf), "output_mode": "base64",
                            "overrides": {"1": {"color": 0x203040, "width": 20}}}))
    size, rgb = pixel(base64.b64decode(r["outputs"][0]["data"]))
    assert size == (20, 64) and close_to(rgb, (0xDF, 0xCF, 0xBF))


def test_input_images_base64_data_uri_and_url(worker, http_server, tmp_path):
    from PIL import Image
    Image.new("RGB", (8, 8), (100, 50, 25)).save(http_server.files_root / "remote.png")
    w = env.attached_worker(worker, allowed_fetch_hosts=["127.0.0.1"])
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "c.png"}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "in_a"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "in_b"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "in_c"}},
    }
    r = ok(run_job(w, {"workflow": wf, "output_mode": "base64", "images": [
        {"name": "a.png", "image": png_b64((10, 200, 30))},
        {"name": "b.png", "image": "data:image/png;base64," + png_b64((1, 2, 3))},
        {"name": "c.png", "image": f"{http_server.url}/remote.png"}]}))
    px = {o["node_id"]: pixel(base64.b64decode(o["data"]))[1] for o in r["outputs"]}
    assert close_to(px["5"], (245, 55, 225)) and close_to(px["6"], (1, 2, 3)) and close_to(px["7"], (100, 50, 25))
    # inputs are removed after the job
    assert not (worker.settings.input_dir / "a.png").exists()


def test_ui_format_workflow_is_converted_and_validated(worker):
    tpl = importlib.import_module("comfyui_workflow_templates_media_other")
    wf = json.loads((Path(tpl.__file__).parent / "templates" / "lora.json").read_text())
    r = run_job(worker, {"workflow": wf, "output_mode": "base64"})
    e = E(r)
    assert e["type"] == "validation"
    kinds = {(p["node_type"], p["problem"], p.get("folder")) for p in e["problems"]}
    # every widget value lined up with its input: the only problems are the two absent model files
    assert kinds == {("CheckpointLoaderSimple", "missing_model", "checkpoints"),
                     ("LoraLoader", "missing_model", "loras")}, e["problems"]


def test_validation_reports_all_problems_at_once(worker):
    wf = env.invert_workflow()
    wf["2"]["inputs"]["image"] = ["99", 0]                                        # broken link
    wf["4"] = {"class_type": "NoSuchNode", "inputs": {}}                             # unknown node type
    wf["5"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}
    wf["6"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 3]}}          # output index out of range
    wf["7"] = {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}}          # MODEL into IMAGE
    r = run_job(worker, {"workflow": wf, "output_mode": "base64"})
    probs = {(p["node_id"], p["node_type"], p["problem"]) for p in E(r)["problems"]}
    assert probs == {("2", "ImageInvert", "broken_link"), ("4", "NoSuchNode", "unknown_node_type"),
                     ("5", "CheckpointLoaderSimple", "missing_model"), ("6", "ImageInvert", "broken_link"),
                     ("7", "ImageInvert", "type_mismatch")}
    assert "models/checkpoints" in next(p for p in E(r)["problems"] if p["node_id"] == "5")["message"]


def test_node_failure_is_structured_with_log_tail(worker):
    wf = env.invert_workflow()
    wf["2"] = {"class_type": "ComfyverFail", "inputs": {"image": ["1", 0], "message": "the node said no"}}
    r = run_job(worker, {"workflow": wf, "output_mode": "base64"})
    e = E(r)
    assert e["type"] == "comfyui" and e["node_id"] == "2" and e["node_type"] == "ComfyverFail"
    assert e["comfy_message"] == "the node said no"
    assert any("the node said no" in line for line in e["log_tail"])
    assert "Traceback" not in e["message"]


def test_timeout_interrupts_comfyui(worker):
    r = run_job(worker, {"workflow": env.slow_workflow(seconds=6, steps=60, color=11), "output_mode": "base64",
                         "timeout": 1})
    assert E(r)["type"] == "timeout"
    ok(run_job(worker, {"workflow": env.invert_workflow(0x010203), "output_mode": "base64"}))
    hist = requests.get(worker.client.url + "/history", timeout=10).json()
    events = [m[0] for h in hist.values() for m in h["status"]["messages"]]
    assert "execution_interrupted" in events


def test_cancellation_interrupts_comfyui(worker):
    async def cancel_after(delay):
        task = asyncio.ensure_future(worker.handle({"id": "cancel-me", "input": {
            "workflow": env.slow_workflow(seconds=8, steps=80, color=12), "output_mode": "base64"}}))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    t0 = time.monotonic()
    assert env.run(cancel_after(1.5)) == "cancelled"
    # ComfyUI was told to stop: the next job does not wait for the 8 s node
    ok(run_job(worker, {"workflow": env.invert_workflow(0x040506), "output_mode": "base64"}))
    assert time.monotonic() - t0 < 7
    hist = requests.get(worker.client.url + "/history", timeout=10).json()
    interrupted = [h for h in hist.values() if any(m[0] == "execution_interrupted" for m in h["status"]["messages"])
                   and h["prompt"][2]["2"]["inputs"].get("seconds") == 8]
    assert interrupted


def test_websocket_drop_mid_job_still_completes(worker):
    proxy = env.TCPProxy(worker.process.port)
    w = env.attached_worker(worker, comfy_url=proxy.url)
    try:
        async def job_with_cut():
            task = asyncio.ensure_future(w.handle({"id": "ws-drop", "input": {
                "workflow": env.slow_workflow(seconds=3, steps=30, color=13), "output_mode": "base64"}}))
            await asyncio.sleep(1.2)
            proxy.cut_all()
            return await task
        r = ok(env.run(job_with_cut()))
        assert proxy.cuts == 1 and w.client.ws_connects >= 2
        assert r["outputs"][0]["kind"] == "image"
    finally:
        env.run(w.client.close())
        proxy.close()


def test_a_websocket_gap_loses_no_output(worker):
    """DL1: messages lost in a connection gap (here: ComfyUI's first output announced while nothing gets
    through, then the connection drops) -- the result still has both outputs: they come from /history."""
    proxy = env.TCPProxy(worker.process.port)
    w = env.attached_worker(worker, comfy_url=proxy.url)
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x202020}},
          "2": {"class_type": "ComfyverSlow", "inputs": {"image": ["1", 0], "seconds": 0.5, "steps": 2}},
          "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "gap_a"}},
          "4": {"class_type": "ComfyverSlow", "inputs": {"image": ["2", 0], "seconds": 4, "steps": 4}},
          "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "gap_b"}}}
    try:
        async def job_with_gap():
            await w.client.ensure_ws()
            task = asyncio.ensure_future(w.handle({"id": "gap", "input": {"workflow": wf, "output_mode": "base64"}}))
            # the gap starts once ComfyUI runs the prompt (asked of ComfyUI itself, not through the proxy): a fixed
            # wait made the gap swallow POST /prompt on a loaded machine, a different failure than the one tested
            queue = f"http://127.0.0.1:{worker.process.port}/queue"
            for _ in range(400):
                running = (await asyncio.to_thread(requests.get, queue, timeout=5)).json()["queue_running"]
                if running or task.done():
                    break
                await asyncio.sleep(0.02)
            proxy.blackhole = True
            await asyncio.sleep(2.5)
            proxy.cut_all()
            proxy.blackhole = False
            return await task
        r = ok(env.run(job_with_gap()))
        assert proxy.dropped > 0
        assert sorted(o["node_id"] for o in r["outputs"]) == ["3", "5"]
    finally:
        env.run(w.client.close())
        proxy.close()


def test_kill_9_mid_job_fails_with_log_tail_then_recovers(worker):
    async def job_with_kill():
        task = asyncio.ensure_future(worker.handle({"id": "killed", "input": {
            "workflow": env.slow_workflow(seconds=5, steps=50, color=14), "output_mode": "base64"}}))
        await asyncio.sleep(1.5)
        os.kill(worker.process.proc.pid, signal.SIGKILL)
        return await task
    starts = worker.process.starts
    r = env.run(job_with_kill())
    e = E(r)
    assert e["type"] == "comfyui_died" and "-9" in e["message"]
    assert any("ComfyverSlow" in line or "got prompt" in line for line in e["log_tail"]), e["log_tail"]
    r = ok(run_job(worker, {"workflow": env.invert_workflow(0x070809), "output_mode": "base64"}))
    assert worker.process.starts == starts + 1 and worker.process.alive()


def test_base64_size_guard(worker):
    w = env.attached_worker(worker, base64_max_bytes=1000)
    r = run_job(w, {"workflow": env.invert_workflow(0x112233, size=256), "output_mode": "base64"})
    e = E(r)
    assert e["type"] == "output_too_large" and "gcs" in e["hint"] and e["size"] > 1000
    env.run(w.client.close())


def test_version_mismatch(worker):
    r = run_job(worker, {"workflow": env.invert_workflow(), "version_id": "other-version"})
    assert E(r)["type"] == "version" and "test-version" in E(r)["message"]
    ok(run_job(worker, {"workflow": env.invert_workflow(0x0A0B0C), "version_id": "test-version",
                        "output_mode": "base64"}))


def test_workflow_url(worker, http_server):
    http_server.routes["/wf.json"] = env.invert_workflow(0x445566)
    w = env.attached_worker(worker, allowed_fetch_hosts=["127.0.0.1"])
    r = ok(run_job(w, {"workflow_url": f"{http_server.url}/wf.json", "output_mode": "base64"}))
    assert close_to(pixel(base64.b64decode(r["outputs"][0]["data"]))[1], (0xBB, 0xAA, 0x99))
    # the same URL without the allowlist: loopback is refused
    r = run_job(worker, {"workflow_url": f"{http_server.url}/wf.json", "output_mode": "base64"})
    assert E(r)["type"] == "input" and "non-public" in E(r)["message"]
    env.run(w.client.close())


def test_cannot_start_comfyui_asks_for_fresh_worker(tmp_path):
    home = tmp_path / "broken"
    home.mkdir()
    (home / "main.py").write_text("import sys\nprint('CUDA error: no kernel image is available')\nsys.exit(3)\n")
    w = Worker(Settings(comfy_home=home, comfy_port=env.free_port(), comfy_url=None, comfy_start_timeout=20))
    with pytest.raises(RuntimeError, match=r"did not become ready.*code 3"):
        w.start()
    r = env.run(w.handle({"id": "x", "input": {"workflow": env.invert_workflow(), "output_mode": "base64"}}))
    assert r["refresh_worker"] is True and E(r)["type"] == "comfyui_down"
    assert any("no kernel image" in line for line in E(r)["log_tail"])


def test_ui_format_with_primitive_reroute_bypass_and_note_runs(worker):
    wf = {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [512, 16, 1, 0x112233],
             "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 1}]},
            {"id": 5, "type": "PrimitiveNode", "mode": 0, "widgets_values": [24, "fixed"],
             "outputs": [{"type": "INT", "links": [1]}]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}]},
            {"id": 3, "type": "ImageInvert", "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 3}]},
            {"id": 4, "type": "SaveImage", "mode": 0, "widgets_values": ["ui_test"],
             "inputs": [{"name": "images", "type": "IMAGE", "link": 4}]},
            {"id": 6, "type": "Note", "mode": 0, "widgets_values": ["just a note"]},
            {"id": 7, "type": "ImageInvert", "mode": 2, "inputs": [{"name": "image", "type": "IMAGE", "link": 5}]},
        ],
        "links": [[1, 5, 0, 1, 0, "INT"], [2, 1, 0, 2, 0, "IMAGE"], [3, 2, 0, 3, 0, "IMAGE"],
                  [4, 3, 0, 4, 0, "IMAGE"], [5, 1, 0, 7, 0, "IMAGE"]],
    }
    r = ok(run_job(worker, {"workflow": wf, "output_mode": "base64"}))
    [o] = r["outputs"]
    size, rgb = pixel(base64.b64decode(o["data"]))
    # width from the primitive node, the bypassed invert passed through, the muted node dropped
    assert o["node_id"] == "4" and size == (24, 16) and close_to(rgb, (0x11, 0x22, 0x33))


def _ui_invert(mutate):
    wf = {"nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [8, 8, 1, 0]},
                    {"id": 4, "type": "SaveImage", "mode": 0, "widgets_values": ["ui_broken"],
                     "inputs": [{"name": "images", "type": "IMAGE", "link": 4}]}],
          "links": [[4, 1, 0, 4, 0, "IMAGE"]]}
    mutate(wf)
    return wf


BROKEN_UI = {
    "link object without origin": lambda w: w.update(links=[{"id": 4}]),
    "link id a list": lambda w: w.update(links=[[[4], 1, 0, 4, 0, "IMAGE"]]),
    "origin id an object": lambda w: w.update(links=[[4, {"x": 1}, 0, 4, 0, "IMAGE"]]),
    "links an object": lambda w: w.update(links={"4": [1, 0]}),
    "input link a list": lambda w: w["nodes"][1]["inputs"][0].update(link=[4]),
    "input without name": lambda w: w["nodes"][1]["inputs"][0].pop("name"),
    "inputs a string": lambda w: w["nodes"][1].update(inputs="images"),
    "node id a list": lambda w: w["nodes"][0].update(id=[1]),
    "type a list": lambda w: w["nodes"][0].update(type=["EmptyImage"]),
    "definitions a list": lambda w: w.update(definitions=[1]),
    "reroute input a string": lambda w: (w["nodes"].append({"id": 9, "type": "Reroute", "inputs": ["x"]}),
                                         w["links"].append([5, 9, 0, 4, 0, "IMAGE"]),
                                         w["nodes"][1]["inputs"][0].update(link=5)),
}


@pytest.mark.parametrize("case", sorted(BROKEN_UI))
def test_broken_ui_format_is_an_input_error_naming_the_entry(worker, case):
    """A hand-edited or hostile UI-format file (broken links, wrong shapes) is the caller's error, named, and never
    `internal` ("a bug in the worker"), which it was for all of these."""
    e = E(run_job(worker, {"workflow": _ui_invert(BROKEN_UI[case]), "output_mode": "base64"}))
    assert e["type"] == "input", e
    assert e["message"].startswith("workflow: ") and ("links" in e["message"] or "nodes[" in e["message"]
                                                      or "definitions" in e["message"]), e


def test_ui_format_link_to_a_missing_node_is_a_validation_error(worker):
    e = E(run_job(worker, {"workflow": _ui_invert(lambda w: w.update(links=[[4, 77, 0, 4, 0, "IMAGE"]])),
                           "output_mode": "base64"}))
    assert e["type"] == "validation" and any(p["node_id"] == "4" for p in e["problems"]), e


@pytest.mark.parametrize("package,name", [("comfyui_workflow_templates_media_other", "default.json"),
                                          ("comfyui_workflow_templates_media_image", "sdxl_simple_example.json"),
                                          ("comfyui_workflow_templates_media_other", "esrgan_example.json")])
def test_real_ui_templates_convert_cleanly(worker, package, name):
    """Real UI-format templates (seed widgets with control values, primitives, notes): after conversion
    the only problems are the model files this test ComfyUI does not have."""
    from handler.workflow import ui_to_api, validate
    tpl = importlib.import_module(package)
    wf = json.loads((Path(tpl.__file__).parent / "templates" / name).read_text())
    info = env.run(worker.client.get_object_info())
    problems = validate(ui_to_api(wf, info), info, worker.settings.input_dir)
    assert problems and {p["problem"] for p in problems} == {"missing_model"}, problems


def test_realize_failure_names_the_version(worker, tmp_path):
    (tmp_path / "versions").mkdir()
    # a worker that would run its own ComfyUI (never started: realize must fail before touching it)
    w = env.attached_worker(worker, realize=True, versions_root=tmp_path, comfy_url=None)
    w.client = worker.client
    r = run_job(w, {"workflow": env.invert_workflow(), "version_id": "not-there"})
    e = E(r)
    assert e["type"] == "version" and "'not-there'" in e["message"] and "realize failed" in e["message"]


def test_comfyui_dying_between_jobs_is_restarted_without_a_job(worker):
    starts = worker.process.starts
    os.kill(worker.process.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (worker.process.starts == starts + 1 and worker._restart is not None
                                               and worker._restart.done()):
        time.sleep(0.2)
    assert worker.process.starts == starts + 1 and worker._restart.result() is True
    assert requests.get(worker.client.url + "/system_stats", timeout=5).ok
    assert "ComfyUI exited with code -9" in "\n".join(worker.process.log)
    ok(run_job(worker, {"workflow": env.invert_workflow(0x0C0D0E), "output_mode": "base64"}))


# --- the same job again, inputs per job, full disk (W1, DL2, DL3, DL4) ----------------------------------
def test_the_same_job_three_times_succeeds_every_time(worker):
    """ComfyUI answers an unchanged prompt from its cache with the old file name: the worker still delivers."""
    job = {"workflow": env.invert_workflow(0x445566, prefix="same"), "output_mode": "base64"}
    images = []
    for i in range(3):
        r = ok(run_job(worker, job, job_id=f"same-{i}"))
        [o] = r["outputs"]
        images.append(pixel(base64.b64decode(o["data"]))[1])
    assert all(close_to(px, (0xFF - 0x44, 0xFF - 0x55, 0xFF - 0x66)) for px in images)


def test_an_input_named_like_a_shipped_file_leaves_it_alone(worker):
    shipped = worker.settings.input_dir / "example.png"
    before = shipped.read_bytes()
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ship"}}}
    r = ok(run_job(worker, {"workflow": wf, "output_mode": "base64",
                            "images": [{"name": "example.png", "image": png_b64((9, 8, 7))}]}))
    assert close_to(pixel(base64.b64decode(r["outputs"][0]["data"]))[1], (9, 8, 7))
    assert shipped.read_bytes() == before  # not overwritten, not deleted
    # and a later job reading the shipped file still finds it
    ok(run_job(worker, {"workflow": wf, "output_mode": "base64"}))


def test_overlapping_jobs_with_the_same_input_name_get_their_own_image(worker):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
          "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
          "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "overlap"}}}

    async def both():
        jobs = [worker.handle({"id": f"ov-{i}", "input": {"workflow": wf, "output_mode": "base64", "images": [
            {"name": "in.png", "image": png_b64(rgb)}]}}) for i, rgb in enumerate([(10, 10, 10), (200, 200, 200)])]
        return await asyncio.gather(*jobs)

    a, b = env.run(both())
    assert close_to(pixel(base64.b64decode(ok(a)["outputs"][0]["data"]))[1], (245, 245, 245))
    assert close_to(pixel(base64.b64decode(ok(b)["outputs"][0]["data"]))[1], (55, 55, 55))


def test_a_full_disk_while_writing_inputs_is_a_clear_error_and_leaves_nothing(worker, monkeypatch):
    import errno as errno_mod
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".part"):
            real(self, data[: len(data) // 2])  # half written, then the disk is full
            raise OSError(errno_mod.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "full"}}}
    r = run_job(worker, {"workflow": wf, "output_mode": "base64", "images": [{"name": "big.png", "image": png_b64()}]})
    e = E(r)
    assert e["type"] == "disk_full" and "No space left" in e["message"] and r.get("refresh_worker") is True
    assert not list(worker.settings.input_dir.rglob("*.part")) and not list(worker.settings.input_dir.rglob("big.png"))
    monkeypatch.undo()
    ok(run_job(worker, {"workflow": wf, "output_mode": "base64", "images": [{"name": "big.png", "image": png_b64()}]}))


# --- a hung ComfyUI, one deadline for the whole job (W2, W3) --------------------------------------------
@pytest.fixture
def own_worker(tmp_path):
    """A worker with a ComfyUI of its own (these tests stop it) and a short hang check."""
    w = Worker(Settings(comfy_home=env.comfy_tree(tmp_path), comfy_port=env.free_port(), comfy_url=None,
                        output_mode="base64", hang_check=2.0, comfy_state_dir=tmp_path / "state"))
    w.start()
    yield w
    if w.process.proc is not None and w.process.alive():
        os.kill(w.process.proc.pid, signal.SIGCONT)
    env.run(w.client.close())
    w.close()


def _stop_comfyui_when_running(w, delay=1.5):
    async def later():
        await asyncio.sleep(delay)
        os.kill(w.process.proc.pid, signal.SIGSTOP)
    return later()


@pytest.mark.parametrize("timeout", [None, 4])
def test_a_stopped_comfyui_is_detected_killed_and_restarted(own_worker, timeout):
    w = own_worker
    job = {"workflow": env.slow_workflow(seconds=30, steps=30), "output_mode": "base64"}
    if timeout:
        job["timeout"] = timeout

    async def both():
        return (await asyncio.gather(w.handle({"id": "hung", "input": job}), _stop_comfyui_when_running(w)))[0]

    t0 = time.monotonic()
    r = env.run(both(), timeout=120)
    e = E(r)
    assert e["type"] == "comfyui_hung" and "being restarted" in e["message"], e
    assert "interrupted" not in e["message"]
    assert time.monotonic() - t0 < 25
    ok(env.run(w.handle({"id": "after", "input": {"workflow": env.invert_workflow(), "output_mode": "base64"}})))


def dripping(closed: threading.Event, every: float):
    """An HTTP route sending 10 bytes every `every` s of a 100 kB body; sets `closed` when the client leaves."""
    def route(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(int(40 / every)):
                handler.wfile.write(b"x" * 10)
                handler.wfile.flush()
                time.sleep(every)
        except OSError:  # the worker gave up and closed the connection
            closed.set()
        return None
    return route


def test_timeout_covers_input_downloads(worker, http_server):
    """A server dripping bytes holds the job no longer than its timeout."""
    http_server.routes["/drip.png"] = dripping(threading.Event(), every=0.5)
    w = env.attached_worker(worker, allowed_fetch_hosts=["127.0.0.1"])
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "d.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "drip"}}}
    t0 = time.monotonic()
    r = run_job(w, {"workflow": wf, "output_mode": "base64", "timeout": 3,
                    "images": [{"name": "d.png", "image": f"{http_server.url}/drip.png"}]})
    assert E(r)["type"] == "timeout" and "did not finish within the job's timeout" in E(r)["message"]
    assert time.monotonic() - t0 < 8
    env.run(w.client.close())


def test_nan_timeout_is_bad_input(worker):
    r = run_job(worker, {"workflow": env.invert_workflow(), "timeout": float("nan")})
    assert E(r)["type"] == "input" and "finite" in E(r)["message"]


def test_a_jobs_log_tail_holds_only_its_own_lines(worker):
    """SEC2: job B's error must not carry job A's prompt text (the log tail is per job)."""
    def failing(msg):
        return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "ComfyverFail", "inputs": {"image": ["1", 0], "message": msg}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}}}
    a = E(run_job(worker, {"workflow": failing("PRIVATE-PROMPT-OF-A"), "output_mode": "base64"}, job_id="a"))
    assert any("PRIVATE-PROMPT-OF-A" in line for line in a["log_tail"])  # its own lines are there
    b = E(run_job(worker, {"workflow": failing("error of b"), "output_mode": "base64"}, job_id="b"))
    assert not any("PRIVATE-PROMPT-OF-A" in line for line in b["log_tail"])
    assert any("error of b" in line for line in b["log_tail"])
    # W5: the worker's folders are not spelled out
    home = str(worker.process.home)
    assert not any(home in line for line in a["log_tail"] + b["log_tail"])


def test_a_job_right_after_a_crash_waits_for_the_restart(own_worker):
    """W6: ComfyUI killed a moment before the job: the job runs on the restarted ComfyUI."""
    w = own_worker
    ok(env.run(w.handle({"id": "warm", "input": {"workflow": env.invert_workflow(), "output_mode": "base64"}})))
    os.kill(w.process.proc.pid, signal.SIGKILL)
    r = env.run(w.handle({"id": "right-after", "input": {"workflow": env.invert_workflow(0x010203),
                                                            "output_mode": "base64"}}), timeout=120)
    ok(r)


def test_an_override_naming_an_input_that_does_not_exist_is_refused(worker):
    r = run_job(worker, {"workflow": env.invert_workflow(), "output_mode": "base64",
                         "overrides": {"1": {"widht": 32}}})
    e = E(r)
    assert e["type"] == "input" and "has no input 'widht'" in e["message"] and "'width'" in e["hint"]
    assert e["node_id"] == "1" and e["node_type"] == "EmptyImage"


def test_a_cancelled_job_stops_its_download(worker, http_server):
    """W4: the job is cancelled during an input download; the download ends with it (the server sees the
    connection close), it does not run on in a thread."""
    closed = threading.Event()
    http_server.routes["/slow.png"] = dripping(closed, every=0.2)
    w = env.attached_worker(worker, allowed_fetch_hosts=["127.0.0.1"])
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "s.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "slow"}}}

    async def cancel_it():
        task = asyncio.ensure_future(w.handle({"id": "dl-cancel", "input": {
            "workflow": wf, "images": [{"name": "s.png", "image": f"{http_server.url}/slow.png"}]}}))
        await asyncio.sleep(1.0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    env.run(cancel_it())
    assert closed.wait(5), "the download went on after the job was cancelled"
    assert not [t for t in threading.enumerate() if t.name == "input-download" and t.is_alive()]
    env.run(w.client.close())


# --- found by an outside review -------------------------------------------------------------------------
def test_only_file_inputs_are_pointed_at_a_jobs_images(worker):
    """An image named like another input's value (the SaveImage prefix `ComfyUI`) leaves that value alone."""
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "ComfyUI"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI"}}}
    r = ok(run_job(worker, {"workflow": wf, "output_mode": "base64",
                            "images": [{"name": "ComfyUI", "image": png_b64((4, 5, 6))}]}))
    [o] = r["outputs"]
    assert o["filename"].startswith("ComfyUI_") and "comfyver-jobs" not in o["filename"]
    assert close_to(pixel(base64.b64decode(o["data"]))[1], (4, 5, 6))


@pytest.mark.parametrize("name", ["in.png [output]", "x[temp]", "a [input]", "ｘ" * 80 + ".png"])  # noqa: RUF001 - a name longer in bytes than in characters
def test_names_comfyui_reads_as_another_folder_or_too_long_are_refused(worker, name):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "n"}}}
    e = E(run_job(worker, {"workflow": wf, "images": [{"name": name, "image": png_b64()}]}))
    assert e["type"] == "input" and "is not allowed" in e["message"]


@pytest.mark.parametrize("url", ["http://example.com:99999/a.png", "http://example.com:abc/a.png", "http://[::1/a.png"])
def test_a_malformed_image_url_is_bad_input_not_internal(worker, url):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "u.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "u"}}}
    e = E(run_job(worker, {"workflow": wf, "images": [{"name": "u.png", "image": url}]}))
    assert e["type"] == "input" and "not a valid URL" in e["message"]


def test_an_upper_case_url_scheme_is_fetched_as_a_url(http_server):
    from handler.fetch import decode_image

    (http_server.files_root / "u.png").write_bytes(b"png-bytes")
    url = http_server.url.replace("http://", "HTTP://") + "/u.png"
    assert decode_image(url, "images[0]", ["127.0.0.1"], 1000) == b"png-bytes"


def test_a_job_for_another_lock_is_refused(worker):
    """lock_digest: the worker runs one exact lock (COMFYVER_LOCK_DIGEST); a job made for another is refused,
    a matching one runs, a malformed one is bad input."""
    mine, other = "a" * 64, "b" * 64
    w = env.attached_worker(worker, lock_digest=mine)
    e = E(run_job(w, {"workflow": env.invert_workflow(), "output_mode": "base64", "lock_digest": other}))
    assert (e["type"] == "version" and "does not match the lock this worker runs" in e["message"]
            and "bbbbbbbbbbbb" in e["message"])
    ok(run_job(w, {"workflow": env.invert_workflow(), "output_mode": "base64", "lock_digest": mine}))
    e = E(run_job(w, {"workflow": env.invert_workflow(), "output_mode": "base64", "lock_digest": "xyz"}))
    assert e["type"] == "input" and "lock_digest" in e["message"]
    env.run(w.client.close())


def test_models_dir_config_is_one_file_in_the_state_folder_not_a_temp_file_per_start(tmp_path, monkeypatch):
    """Each start wrote a new /tmp/comfyver-models-*.yaml that nothing removed (32 of them piled up here)."""
    import tempfile

    from handler.comfy_process import ComfyProcess

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    s = Settings(comfy_home=tmp_path / "home", comfy_state_dir=tmp_path / "state", models_dir=tmp_path / "vol models",
                 comfy_port=env.free_port(), comfy_url=None)
    proc = ComfyProcess(s)
    for _ in range(3):  # a start and two restarts
        cmd = proc.command()
    config = Path(cmd[cmd.index("--extra-model-paths-config") + 1])
    assert config == tmp_path / "state" / "extra_model_paths.yaml"
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in config.parent.iterdir()
                                                    if p.name != "job-models-active") == [config.name]
    import yaml
    assert yaml.safe_load(config.read_text())["comfyver_models"]["base_path"] == str(tmp_path / "vol models")
