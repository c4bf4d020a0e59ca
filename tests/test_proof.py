"""issue 28, the lock is proven before it is written: every model value among the options its loader input offers
(lock/proof.py), run by `lock` (with the probe), `check` and `verify --runtime` alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.lock import analyze, nodemap, probe, proof

from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)

# ComfyUI-Impact-Pack's UltralyticsDetectorProvider: `"bbox/" + f` for each file of ultralytics_bbox, `"segm/" + f`
# for each of ultralytics_segm; an option never starts with the folder's own names, so only `input_folders` has it
IMPACT_INPUT = {"model_name": [["bbox/", "ultralytics_bbox"], ["segm/", "ultralytics_segm"]]}
VALUE = "bbox/face_yolov8m.pt"


def _answer() -> dict[str, Any]:
    """What the probe answers for the fixture's pack comfyui-b, whose SharedText plays Impact's detector loader."""
    return {"packs": {"comfyui-b": {"ok": True, "classes": ["SharedText"], "error": ""}},
            "classes": {"SharedText": {"pack": "comfyui-b", "model_inputs": [], "input_folders": IMPACT_INPUT},
                        "KSampler": {"pack": "comfyui-core", "model_inputs": []}}}


def _lock(keys: list[str]) -> dict[str, Any]:
    return {"id": "v", "models": {k: {"original": {"type": "url", "url": f"https://h/{k}"}} for k in keys}}


def _ui(value: str, mode: int = 0, outputs: list[dict[str, Any]] | None = None) -> analyze.Workflow:
    node: dict[str, Any] = {"id": 7, "type": "SharedText", "mode": mode, "widgets_values": [value]}
    if outputs is not None:
        node["outputs"] = outputs
    return analyze.parse({"nodes": [node], "links": []}, "workflows/ui.json")


def _api(value: str) -> analyze.Workflow:
    return analyze.parse({"3": {"class_type": "SharedText", "inputs": {"model_name": value}}}, "workflows/api.json")


@pytest.mark.parametrize("parse", [_ui, _api], ids=["ui", "api"])
def test_a_model_its_loader_does_not_offer_is_a_problem_naming_everything(parse) -> None:
    know = proof.from_probe(_answer())
    wrong = proof.prove(_lock(["ultralytics_bbox/bbox/face_yolov8m.pt"]), [parse(VALUE)], know)
    assert len(wrong) == 1
    p = wrong[0]
    assert (p.kind, p.class_type, p.input, p.value) == ("model-not-offered", "SharedText", "model_name", VALUE)
    assert p.workflow.startswith("workflows/") and p.node_id in ("7", "3")
    assert p.folders == ("ultralytics_bbox", "ultralytics_segm")
    assert p.closest == "ultralytics_bbox/bbox/face_yolov8m.pt"
    assert "--model 'ultralytics_bbox/face_yolov8m.pt=https://h/ultralytics_bbox/bbox/face_yolov8m.pt'" in p.fix
    assert know.source == "probe"
    # the right placement: under the folder, the loader's prefix not doubled (or at models/ultralytics/bbox)
    for keys in (["ultralytics_bbox/face_yolov8m.pt"], ["ultralytics/bbox/face_yolov8m.pt"]):
        assert proof.prove(_lock(keys), [parse(VALUE)], know) == []
    # the segm/ prefix draws from the other folder
    assert proof.prove(_lock(["ultralytics_segm/p.pt"]), [parse("segm/p.pt")], know) == []
    assert len(proof.prove(_lock(["ultralytics_bbox/p.pt"]), [parse("segm/p.pt")], know)) == 1


def test_a_class_comfyui_does_not_register_is_a_problem_and_a_frontend_only_one_is_not() -> None:
    wf = analyze.parse({"nodes": [
        {"id": 1, "type": "Gone", "mode": 0, "inputs": [{"name": "x", "link": 1}]},
        {"id": 2, "type": "JsOnly", "mode": 0},          # wired to nothing: a pack's frontend-only node
        {"id": 3, "type": "Off", "mode": 4, "inputs": [{"name": "x", "link": 1}]},
        {"id": 4, "type": "Note", "mode": 0}], "links": [[1, 1, 0, 3, 0, "X"]]}, "workflows/c.json")
    found = proof.prove(_lock([]), [wf], proof.from_probe(_answer()))
    assert [(p.kind, p.class_type, p.node_id) for p in found] == [("class-not-registered", "Gone", "1")]
    # the static scan does not know what is registered: class coverage is check's own
    assert proof.prove(_lock([]), [wf], proof.from_scan({})) == []


def test_optional_models_are_not_demanded() -> None:
    """Bypassed, muted and unconnected nodes' values (see a42f9fc) are not checked: ComfyUI does not run them."""
    know = proof.from_probe(_answer())
    for wf in (_ui(VALUE, mode=4), _ui(VALUE, mode=2), _ui(VALUE, outputs=[{"name": "X", "links": []}])):
        assert proof.prove(_lock(["ultralytics_bbox/bbox/face_yolov8m.pt"]), [wf], know) == []
    assert len(proof.prove(_lock(["x/y.pt"]), [_ui(VALUE, outputs=[{"name": "X", "links": [4]}])], know)) == 1


def test_legacy_and_aliased_folders() -> None:
    """ComfyUI-GGUF's unet_gguf lists diffusion_models (and the legacy unet): a file under unet_gguf/ is offered by
    no loader. A core input listing `checkpoints` offers exactly its keys' names (no prefix)."""
    answer = {"packs": {}, "classes": {
        "UnetLoaderGGUF": {"pack": "gguf", "model_inputs": [["unet_name", "unet_gguf"]]},
        "CheckpointLoaderSimple": {"pack": "comfy-core", "model_inputs": [["ckpt_name", "checkpoints"]]}}}
    know = proof.from_probe(answer)
    gguf = analyze.parse({"1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "f.gguf"}}}, "w.json")
    for ok in ("diffusion_models/f.gguf", "unet/f.gguf"):
        assert proof.prove(_lock([ok]), [gguf], know) == []
    bad = proof.prove(_lock(["unet_gguf/f.gguf"]), [gguf], know)
    assert [(p.closest, p.folders) for p in bad] == [("unet_gguf/f.gguf", ("unet_gguf",))]
    assert "--model 'diffusion_models/f.gguf=" in bad[0].fix
    ck = analyze.parse({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd/a.safetensors"}}}, "w")
    assert proof.prove(_lock(["checkpoints/sd/a.safetensors"]), [ck], know) == []
    assert len(proof.prove(_lock(["checkpoints/a.safetensors"]), [ck], know)) == 1


# ---------------------------------------------------------------- lock, check and verify --runtime give one verdict


def _setup(env, tmp_path: Path, monkeypatch, manager_entry: bool) -> tuple[Path, str]:
    data = b"yolo" * 1000
    (env.http.files_root / "face_yolov8m.pt").write_bytes(data)
    url = f"{env.http.url}/face_yolov8m.pt"
    if manager_entry:
        mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
        (mgr / "model-list.json").write_text(json.dumps({"models": [
            {"filename": "face_yolov8m.pt", "url": url, "save_path": "ultralytics/bbox", "type": "Ultralytics"}]}))
        nodemap.manager.cache_clear()
    answer = _answer()
    monkeypatch.setattr(probe, "check_interpreter", lambda python, what="--probe": python)
    monkeypatch.setattr(probe, "for_sources", lambda lock, python, refresh=False: answer)
    monkeypatch.setattr(probe, "cached", lambda lock, uv_lock: answer)
    monkeypatch.setattr(probe, "for_version", lambda lock, uv_lock, tree, refresh=False: answer)
    wf = tmp_path / "det.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SharedText", "mode": 0, "widgets_values": [VALUE]}]}))
    return wf, url


def _args(env, wf: Path, vid: str) -> list[str]:
    return ["lock", vid, "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry", "--no-python",
            "--json", "--choose", "SharedText=comfyui-b", "--probe", "/usr/bin/python3"]


def _check_and_verify(env, vid: str) -> tuple[int, list[Any]]:
    """`check` (its JSON left in capsys) and verify's proof, both against the probe's answer for the version."""
    from comfyver.base import project
    from comfyver.realize import verify

    vdir = env.root / "versions" / vid
    (vdir / "uv.lock").write_text("# the version's uv.lock (the probe's cache key)\n")
    rc = cli.main(["check", vid, "--no-python", "--json"])
    lock = lockfile.read(project.lock_path(env.root, vid))
    return rc, verify.proof_mismatches(env.root, vid, lock, vdir)


def test_lock_refuses_a_model_placed_where_its_loader_never_looks(env, capsys, tmp_path, monkeypatch):
    """The issue's detector: `bbox/face_yolov8m.pt` locked as ultralytics_bbox/bbox/face_yolov8m.pt (one bbox/ too
    many). `lock --probe` refuses it with the fix and writes nothing; --no-verify writes it and says so; `check` and
    `verify --runtime` fail it too."""
    wf, url = _setup(env, tmp_path, monkeypatch, manager_entry=False)
    wrong = ["--model", f"ultralytics_bbox/bbox/face_yolov8m.pt={url}"]
    rc, out, err = run(capsys, *_args(env, wf, "det"), *wrong)
    res = json.loads(out)
    assert rc == 1, out + err
    [p] = res["problems"]
    assert p["item"] == f"model {VALUE}" and "ultralytics_bbox, ultralytics_segm" in p["problem"]
    assert "workflows/det.json#1 SharedText.model_name" in p["problem"]
    assert "ultralytics_bbox/bbox/face_yolov8m.pt" in p["problem"]
    assert f"--model 'ultralytics_bbox/face_yolov8m.pt={url}'" in p["fix"]
    assert not (env.root / "versions" / "det" / "version.json").exists()

    rc, out, err = run(capsys, *_args(env, wf, "det"), *wrong, "--no-verify")
    assert rc == 0, out + err
    assert any(n.startswith("--no-verify: written although the proof failed: model bbox/") for n in json.loads(out)["notes"])
    rc, mismatches = _check_and_verify(env, "det")
    out = capsys.readouterr().out
    probs = json.loads(out)["versions"]["det"]["problems"]
    assert rc == 1 and [p["item"] for p in probs] == [f"model {VALUE}"], out
    assert "from the probe" in probs[0]["problem"] and probs[0]["problem"].startswith("workflows/det.json#1")
    assert mismatches[0].found.startswith("workflows/det.json#1 SharedText.model_name")
    assert [(m.kind, m.name) for m in mismatches] == [("proof", f"model {VALUE}")]


def test_lock_check_and_verify_pass_the_right_placement(env, capsys, tmp_path, monkeypatch):
    wf, _ = _setup(env, tmp_path, monkeypatch, manager_entry=True)
    rc, out, err = run(capsys, *_args(env, wf, "det"))
    assert rc == 0, out + err
    assert json.loads(out)["models"] == ["ultralytics/bbox/face_yolov8m.pt"]  # where the Manager puts it
    rc, mismatches = _check_and_verify(env, "det")
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out)["versions"]["det"]["problems"] == [], out
    assert mismatches == []


def test_the_probe_records_every_folder_and_prefix_an_input_lists(tmp_path: Path) -> None:
    """ComfyUI's own node loading (ComfyUI 0.3.75 on the CPU): an Impact-style loader whose options carry their
    folder's prefix is seen (`input_folders`), and the proof checks a workflow against what it recorded."""
    from tests.support import comfyui

    pack = tmp_path / "impactish"
    pack.mkdir()
    (pack / "__init__.py").write_text(
        "import folder_paths\n"
        "class Det:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        b = ['bbox/' + x for x in folder_paths.get_filename_list('ultralytics_bbox')]\n"
        "        g = ['segm/' + x for x in folder_paths.get_filename_list('ultralytics_segm')]\n"
        "        return {'required': {'model_name': (b + g,), 'ckpt': (folder_paths.get_filename_list('checkpoints'),),\n"
        "                             'image': ('IMAGE',), 'n': ('INT', {'default': 1})}}\n"
        "    RETURN_TYPES = ()\n"
        "    FUNCTION = 'f'\n"
        "NODE_CLASS_MAPPINGS = {'Det': Det}\n")
    result = probe.run(comfyui.source(), [pack])
    info = result["classes"]["Det"]
    assert info["input_folders"] == {**IMPACT_INPUT, "ckpt": [["", "checkpoints"]]}
    assert info["model_inputs"] == [["ckpt", "checkpoints"]]  # unchanged: what analyze places by
    assert info["required_links"] == ["image"]  # a link fills it; INT and the options are widgets
    wf = analyze.parse({"1": {"class_type": "Det", "inputs": {"model_name": VALUE, "ckpt": "a.safetensors",
                                                              "image": ["2", 0]}}}, "w")
    know = proof.from_probe(result)
    assert proof.prove(_lock(["ultralytics_bbox/face_yolov8m.pt", "checkpoints/a.safetensors"]), [wf], know) == []
    assert [p.value for p in proof.prove(_lock(["ultralytics_bbox/bbox/face_yolov8m.pt", "loras/a.safetensors"]),
                                         [wf], know)] == [VALUE, "a.safetensors"]


def test_a_required_input_only_a_link_fills_is_proven_connected() -> None:
    """ComfyUI refuses a prompt whose node leaves a required MODEL/IMAGE... input without a link ("Required input
    is missing"): the proof names it (the probe records `required_links`); bypassed, muted and unrun nodes are not
    checked, nor nodes inside a subgraph."""
    answer = _answer()
    answer["classes"]["KSampler"]["required_links"] = ["model", "positive"]
    know = proof.from_probe(answer)

    def ui(inputs: list[dict[str, Any]], mode: int = 0, nid: int = 3) -> analyze.Workflow:
        return analyze.parse({"nodes": [{"id": nid, "type": "KSampler", "mode": mode, "inputs": inputs,
                                         "outputs": [{"name": "LATENT", "links": [9]}], "widgets_values": [1]}],
                              "links": []}, "workflows/k.json")

    half = [{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": None}]
    [p] = proof.prove(_lock([]), [ui(half)], know)
    assert (p.kind, p.item, p.node_id, p.input) == ("input-not-connected", "input KSampler.positive", "3", "positive")
    assert "Required input is missing" in p.problem and p.problem.startswith("workflows/k.json#3 KSampler")
    full = [{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 2}]
    assert proof.prove(_lock([]), [ui(full)], know) == []
    assert proof.prove(_lock([]), [ui(half, mode=4)], know) == []  # bypassed
    api = analyze.parse({"3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1}}}, "workflows/a.json")
    assert [p.input for p in proof.prove(_lock([]), [api], know)] == ["positive"]
    # the static scan records no required inputs: nothing is claimed
    assert proof.prove(_lock([]), [ui(half)], proof.from_scan({})) == []
