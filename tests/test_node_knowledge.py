"""What comfyver knows about node packs, measured on the real corpus (../shared/data/node-packs): the runtime
probe (ComfyUI 0.3.75's own node loading on the CPU) against the static scanner, and no model dropped silently
from the packs' own example workflows."""

from __future__ import annotations

import json

import pytest
from comfyver.lock import analyze, nodemap, nodescan, probe
from comfyver.sources import resolve

from tests.support import comfyui, nodepacks


@pytest.fixture(scope="module")
def corpus():
    return {p["name"]: (p, nodepacks.checkout(p)) for p in nodepacks.packs()}


@pytest.fixture(scope="module")
def probed(corpus):
    return probe.run(comfyui.source(), [d for _, d in corpus.values()])


def test_probe_loads_the_real_packs_and_sees_their_folders(probed, corpus):
    ok = {n for n, p in probed["packs"].items() if p["ok"]}
    # the packs whose Python needs the test environment has (pyproject [test]) all import
    assert {"masquerade-nodes-comfyui-432cb4d146a3", "ComfyUI-Easy-Use-b5e31ef12ad9", "comfy_mtb-7fb27804e17f",
            "was-node-suite-comfyui-6c3fed70655b", "comfyui-inpaint-nodes-b32f293d3f3e"} <= ok
    # a pack built for a newer core fails, and says why
    ltx = probed["packs"]["ComfyUI-LTXVideo-cd5d371518af"]
    assert not ltx["ok"] and "comfy.ldm.lightricks" in ltx["error"]
    assert len(probed["packs"]["comfy_mtb-7fb27804e17f"]["classes"]) > 50  # names computed by a helper
    folders = {f for c in probed["classes"].values() for _, f in c["model_inputs"]}
    assert {"checkpoints", "loras", "inpaint", "text_encoders"} <= folders
    assert probed["classes"]["CheckpointLoaderSimple"]["model_inputs"] == [["ckpt_name", "checkpoints"]]


def test_static_scan_matches_the_probe_or_says_what_it_missed(probed, corpus):
    """Recall of classes and model-input folders, static vs probe, on every pack that imports."""
    core = probe.model_inputs({"classes": {c: v for c, v in probed["classes"].items() if v["pack"] == "comfy-core"}})
    found = total = inputs_found = inputs_total = 0
    for name, (_pack, tree) in corpus.items():
        p = probed["packs"][tree.name]
        if not p["ok"]:
            continue
        scan = nodemap.scan_tree_full(tree)
        nodescan.resolve_inherited(scan.classes, scan.inherits, core)
        missing = set(p["classes"]) - set(scan.classes)
        if missing:  # never silent: the scan names the registration it could not follow
            assert scan.unfollowed, (name, sorted(missing)[:5])
        found += len(set(p["classes"]) & set(scan.classes))
        total += len(p["classes"])
        for c in p["classes"]:
            want = [tuple(x) for x in probed["classes"][c]["model_inputs"]]
            got = set(scan.classes.get(c, []))
            inputs_total += len(want)
            inputs_found += sum(1 for w in want if w in got)
    assert total > 600 and found / total >= 0.85
    assert inputs_total > 150 and inputs_found / inputs_total >= 0.95


def test_no_model_of_an_example_workflow_is_dropped(corpus, probed):
    """Every widget value that looks like a model file, in every example workflow of the corpus, is in the
    report's models (with a folder, or as '?/<name>' that lock turns into a problem with its fix)."""
    inputs = probe.model_inputs(probed)
    checked = 0
    for _name, (pack, tree) in corpus.items():
        for w in pack["example_workflows"]:
            wf = analyze.load(tree / (w["path"] if isinstance(w, dict) else w))
            rep = analyze.report([wf], nodemap.NodeMap(core_classes={}, manager_data=nodemap.ManagerData()), inputs)
            names = {m["name"] for m in rep.models.values()}
            for u in wf.nodes:
                for v in list(u.named.values()) + u.positional:
                    if analyze._looks_like_model(v) and not u.virtual:
                        checked += 1
                        assert v.replace("\\", "/") in names, (w, u.class_type, v)
    assert checked > 50


def test_a_scanned_class_with_no_known_input_still_reports_its_model_file():
    wf = analyze.parse({"nodes": [{"id": 1, "type": "OddLoader", "mode": 0,
                                   "widgets_values": ["weird_model.safetensors", "None", 3]}]}, "wf.json")
    uses = analyze.model_uses(wf, {"OddLoader": []})
    assert [(u.folder, u.name) for u in uses] == [(None, "weird_model.safetensors")]
    # a known model input's "None" is not a file
    wf = analyze.parse({"x": {"class_type": "LoraStack", "inputs": {"lora_1_name": "a.safetensors",
                                                                    "lora_2_name": "None"}}}, "api.json")
    uses = analyze.model_uses(wf, {"LoraStack": [("lora_1_name", "loras"), ("lora_2_name", "loras")]})
    assert [(u.folder, u.name) for u in uses] == [("loras", "a.safetensors")]


def test_scanner_follows_variables_loops_helpers_and_bases():
    files = {
        "__init__.py": "from .sub import NODE_CLASS_MAPPINGS as SUB\nfrom .sub import Loader\n"
                       "NODE_CLASS_MAPPINGS = {**SUB, 'Wrapped': Loader}\n",
        "sub.py": (
            "import folder_paths\n"
            "CACHED = folder_paths.get_filename_list('unet_gguf')\n"
            "def loras():\n    return ['None'] + folder_paths.get_filename_list('loras')\n"
            "class Loader:\n"
            "    @classmethod\n"
            "    def INPUT_TYPES(s):\n"
            "        names = [x for x in folder_paths.get_filename_list('clip') if x.endswith('.gguf')]\n"
            "        inputs = {'required': {'clip_name': (names,), 'unet_name': (CACHED,)}, 'optional': {}}\n"
            "        for i in range(1, 3):\n"
            "            inputs['optional'][f'lora_{i}'] = (loras(), {'default': 'None'})\n"
            "        return inputs\n"
            "class MyCkpt(CheckpointLoaderSimple):\n    pass\n"
            "NODE_CLASS_MAPPINGS = {'GGUFLoader': Loader, 'MyCkpt': MyCkpt}\n"),
        "late.py": "NODE_CLASS_MAPPINGS[label(x)] = x\n",
    }
    scan = nodescan.scan(files)
    assert scan.classes["GGUFLoader"] == [("clip_name", "text_encoders"), ("unet_name", "unet_gguf"),
                                          ("lora_1", "loras"), ("lora_2", "loras")]
    assert scan.classes["Wrapped"] == scan.classes["GGUFLoader"]
    assert scan.inherits["MyCkpt"] == ["CheckpointLoaderSimple"]
    nodescan.resolve_inherited(scan.classes, scan.inherits, {"CheckpointLoaderSimple": [("ckpt_name", "checkpoints")]})
    assert scan.classes["MyCkpt"] == [("ckpt_name", "checkpoints")]
    assert scan.unfollowed == ["late.py:1: NODE_CLASS_MAPPINGS[label(x)]"]


def test_manager_models_are_matched_by_name_and_folder(tmp_path):
    (tmp_path / "model-list.json").write_text(json.dumps({"models": [
        {"filename": "diffusion_pytorch_model.safetensors", "save_path": "controlnet/SDXL", "type": "controlnet",
         "url": "https://example.org/cn.safetensors"},
        {"filename": "diffusion_pytorch_model.safetensors", "save_path": "diffusion_models/Kolors",
         "type": "diffusion_model", "url": "https://example.org/kolors.safetensors"},
        {"filename": "same.safetensors", "save_path": "default", "type": "lora", "url": "https://example.org/a"},
        {"filename": "same.safetensors", "save_path": "loras", "type": "lora", "url": "https://example.org/b"},
    ]}))
    mgr = nodemap.ManagerData.load(tmp_path)
    assert [e["url"] for e in mgr.model_sources("diffusion_pytorch_model.safetensors", "diffusion_models")] == \
        ["https://example.org/kolors.safetensors"]
    assert mgr.model_sources("diffusion_pytorch_model.safetensors", "loras") == []
    assert len(mgr.model_sources("same.safetensors", "loras")) == 2  # ambiguous: lock lists both
    wf = analyze.parse({"a": {"class_type": "UNETLoader", "inputs": {"unet_name": "diffusion_pytorch_model.safetensors"}},
                        "b": {"class_type": "LoraLoader", "inputs": {"lora_name": "same.safetensors"}}}, "w.json")
    rep = analyze.report([wf], nodemap.NodeMap(core_classes={}, manager_data=mgr), {}, mgr)
    assert rep.models["diffusion_models/diffusion_pytorch_model.safetensors"]["url"] == "https://example.org/kolors.safetensors"
    assert "url" not in rep.models["loras/same.safetensors"] and len(rep.models["loras/same.safetensors"]["candidates"]) == 2


def test_missing_manager_data_is_said_once(tmp_path):
    mgr = nodemap.ManagerData.load(tmp_path / "nothing-here")
    wf = analyze.parse({"a": {"class_type": "KSampler", "inputs": {}}}, "w.json")
    rep = analyze.report([wf], nodemap.NodeMap(core_classes={"KSampler": []}, manager_data=mgr), {}, mgr)
    assert sum("no ComfyUI-Manager data" in n for n in rep.notes) == 1


@pytest.mark.parametrize("url, want", [
    ("https://huggingface.co/Kwai-Kolors/Kolors/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors",
     "hf://Kwai-Kolors/Kolors@main/unet/diffusion_pytorch_model.fp16.safetensors"),
    ("https://huggingface.co/o/r/blob/0123abc/a%20b.safetensors?download=true", "hf://o/r@0123abc/a b.safetensors"),
    ("https://huggingface.co/datasets/o/r/resolve/main/x.bin", None),
    ("https://example.org/o/r/resolve/main/x.bin", None),
])
def test_hugging_face_file_urls_become_hf_paths(url, want):
    assert resolve.parse_model_source(url)["url"] == (want or url)


def test_plain_analyze_uses_the_newest_cached_core(tmp_path, monkeypatch):
    """`comfyver analyze wf.json` (no --version) knows core classes and their folders from a cached core scan."""
    from comfyver.base import project
    from comfyver.base.fsutil import atomic_write_json
    from comfyver.lock import pipeline

    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "cache"))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "CheckpointLoaderSimple", "mode": 0,
                                         "widgets_values": ["sd15.safetensors"]}]}))
    rep = pipeline.analyze_workflows([wf], registry=False)
    assert any("no ComfyUI core scan is cached" in n for n in rep.notes)
    scan = nodescan.scan({"nodes.py": (comfyui.source() / "nodes.py").read_text()})
    atomic_write_json(project.cache_dir() / "nodescan" / f"core-{'a' * 40}-v{nodemap.SCAN_VERSION}.json", scan.to_json())
    rep = pipeline.analyze_workflows([wf], registry=False)
    assert rep.core == ["CheckpointLoaderSimple"] and "checkpoints/sd15.safetensors" in rep.models
    assert any("newest cached ComfyUI scan (aaaaaaaaaaaa)" in n for n in rep.notes)


def _real_report(corpus, pack_name, workflow):
    _pack, tree = corpus[pack_name]
    wf = analyze.load(tree / workflow)
    core = nodemap.scan_tree(comfyui.source(), core=True)
    mgr = nodemap.manager()
    return analyze.report([wf], nodemap.NodeMap(core_classes=core, manager_data=mgr), core, mgr)


@pytest.mark.parametrize("pack_name, workflow, cls, pick", [
    ("masquerade-nodes-comfyui", "tests/general_tests.json", "Blur", "masquerade-nodes-comfyui"),  # coverage
    ("ComfyUI_InstantID", "examples/InstantID_basic.json", "ApplyInstantID", "comfyui_instantid"),  # owner's name
    ("x-flux-comfyui", "workflows/lora_workflow.json", "FluxLoraLoader", "x-flux-comfyui"),  # coverage
])
def test_ambiguous_classes_of_real_workflows_are_settled_by_their_evidence(corpus, pack_name, workflow, cls, pick):
    """With ComfyUI-Manager's real node map these classes have 2-3 providers; the workflow's other classes or
    the class's own name decide, and the evidence is shown."""
    rep = _real_report(corpus, pack_name, workflow)
    assert cls not in rep.ambiguous
    assert cls in rep.packs[pick]["classes"] and rep.packs[pick]["evidence"][cls]
    assert any(n.startswith(f"class {cls}: picked {pick} among") for n in rep.notes)


def test_a_bundle_listing_does_not_beat_the_owners_name_pattern():
    mgr = nodemap.ManagerData()
    mgr.exact = {"Seed (rgthree)": ["https://github.com/someone/bundle-pack"]}
    mgr.patterns = [(__import__("re").compile(r" \(rgthree\)$"), "https://github.com/rgthree/rgthree-comfy")]
    r = nodemap.NodeMap(core_classes={}, manager_data=mgr).decide("Seed (rgthree)")
    assert r.status == "pack" and r.pack.name == "rgthree-comfy" and "owner" in r.why
    # and --choose accepts either candidate shown, the pattern owner included
    for name in ("rgthree-comfy", "bundle-pack"):
        r = nodemap.NodeMap(core_classes={}, manager_data=mgr, choices={"Seed (rgthree)": name}).decide("Seed (rgthree)")
        assert r.status == "pack" and r.pack.name == name and r.pack.url


def test_verify_runtime_asks_for_the_classes_comfyui_will_run(tmp_path):
    """Subgraph instances (typed by the subgraph's id) and group nodes are entered; frontend-only, muted and
    bypassed nodes are not asked of /object_info."""
    from comfyver.realize import verify

    sg = "6f1c2a3b-0000-4000-8000-000000000001"
    wf = {"nodes": [
        {"id": 1, "type": sg, "mode": 0},
        {"id": 2, "type": "workflow>MyGroup", "mode": 0},
        {"id": 3, "type": "Reroute", "mode": 0},
        {"id": 4, "type": "BypassedThing", "mode": 4},
        {"id": 5, "type": "MutedThing", "mode": 2},
        {"id": 6, "type": "KSampler", "mode": 0}],
        "extra": {"groupNodes": {"MyGroup": {"nodes": [{"type": "VAEDecode", "index": 0}]}}},
        "definitions": {"subgraphs": [{"id": sg, "nodes": [{"id": 1, "type": "CLIPTextEncode", "mode": 0}]}]}}
    vdir = tmp_path / "versions" / "v"
    (vdir / "workflows").mkdir(parents=True)
    (vdir / "workflows" / "w.json").write_text(json.dumps(wf))
    got = verify.workflow_classes(tmp_path, "v", {"workflows": ["workflows/w.json"]})
    assert sorted(got) == ["CLIPTextEncode", "KSampler", "VAEDecode"]


def test_lock_with_the_probe_records_what_comfyui_registers(tmp_path):
    """comfy_mtb names its classes with a helper the scan cannot follow: `lock --probe PYTHON` records the
    classes ComfyUI really registers as provides (the probe equals provides), and says it used the probe."""
    import sys

    from tests.support import corpuslock

    srv, proj, env = corpuslock.setup(tmp_path)
    try:
        _pack, tree = next((p, nodepacks.checkout(p)) for p in nodepacks.packs() if p["name"] == "comfy_mtb")
        rc, out, _ = corpuslock._cli(proj, env, "lock", "mtb", "--workflow", str(tree / "examples/08-note-plus.json"),
                                     "--comfyui-ref", "v0.3.75", "--no-python", "--json", "--probe", sys.executable)
    finally:
        srv.close()
    res = json.loads(out)
    assert rc == 0 and res["knowledge"] == "probe", out
    lock = json.loads((proj / "versions" / "mtb" / "version.json").read_text())
    provides = lock["nodes"]["comfy_mtb"]["provides"]
    assert len(provides) > 50 and "Animation Builder (mtb)" in provides
    # the workflow's "Note Plus (mtb)" is one of the pack's JS-only nodes: not registered, wired to nothing
    assert "Note Plus (mtb)" not in provides
    assert any("Note Plus (mtb)" in n and "frontend-only" in n for n in res["notes"])


def test_verify_runtime_does_not_ask_for_a_locked_packs_frontend_only_node():
    from comfyver.realize import verify

    uses = {"Note Plus (mtb)": ("w.json", False), "NoSuchNode": ("w.json", False), "Wired": ("w.json", True),
            "KSampler": ("w.json", True)}
    found = verify.runtime_mismatches(uses, {"KSampler": {}}, {"Note Plus (mtb)", "Wired"})
    assert [m.name for m in found] == ["NoSuchNode", "Wired"]


@pytest.mark.parametrize("source", [
    # a class attribute that refers to itself, and two that refer to each other
    "class N:\n    models = s.models\n    @classmethod\n    def INPUT_TYPES(s):\n        m = s.models\n"
    "        return {'required': {'x': (m,)}}\nNODE_CLASS_MAPPINGS = {'N': N}\n",
    "class N:\n    a = s.b\n    b = s.a\n    @classmethod\n    def INPUT_TYPES(s):\n        return {'required': {'x': (s.a,)}}\n"
    "NODE_CLASS_MAPPINGS = {'N': N}\n",
    # an expression too deep for the evaluator, and an int too long to print
    "class N:\n    @classmethod\n    def INPUT_TYPES(s):\n        x = " + "+".join(["a"] * 1500) + "\n"
    "        return {'required': {'x': (x,)}}\nNODE_CLASS_MAPPINGS = {'N': N}\n",
    "import folder_paths\nclass N:\n    @classmethod\n    def INPUT_TYPES(s):\n        a = " + "9" * 4300 + "\n        d = {}\n"
    "        for i in range(a + a, a + a + 2):\n"
    "            d[f'in{i}'] = (folder_paths.get_filename_list('loras'),)\n        return d\n"
    "NODE_CLASS_MAPPINGS = {'N': N}\n",
    # a helper that calls itself many times (exponential without a memo)
    "def f():\n    return " + "+".join(["f()"] * 40) + "\nX = f()\nclass N:\n    pass\nNODE_CLASS_MAPPINGS = {'N': N}\n",
])
def test_a_hostile_pack_cannot_crash_or_hang_the_scanner(source):
    """Found by an outside review: each of these raised RecursionError/ValueError or ran for minutes."""
    import time

    t = time.monotonic()
    scan = nodescan.scan({"__init__.py": source})
    assert time.monotonic() - t < 10
    assert "N" in scan.classes


def test_a_file_too_deep_to_parse_is_reported_not_dropped():
    scan = nodescan.scan({"deep.py": "x = " + "(" * 400 + "1" + ")" * 400 + "\nNODE_CLASS_MAPPINGS = {'A': A}\n",
                          "ok.py": "NODE_CLASS_MAPPINGS = {'B': B}\n"})
    assert "B" in scan.classes and any(u.startswith("deep.py:0: not analysed") for u in scan.unfollowed)


def test_probe_interpreter_is_checked_first_and_errors_are_redacted(tmp_path, monkeypatch):
    """Found by an outside review: a missing or relative --probe interpreter raised a traceback after every
    node was resolved; a pack's import error quoting a token reached notes and the cache."""
    from comfyver.base.errors import UsageError

    for bad in ("/nonexistent/python", str(tmp_path)):
        with pytest.raises(UsageError, match="no executable interpreter"):
            probe.check_interpreter(bad)
    link = tmp_path / "py"
    link.symlink_to(__import__("sys").executable)
    monkeypatch.chdir(tmp_path)
    assert probe.check_interpreter("py") == str(link)  # absolute, the venv link kept
    # two interpreters that resolve to the same binary are told apart by their prefix
    assert b"prefix=" in probe.interpreter_identity(str(link))
    monkeypatch.setenv("HF_TOKEN", "secret123456")
    pack = tmp_path / "leaky"
    pack.mkdir()
    (pack / "__init__.py").write_text("import os\nraise ImportError('token=' + os.environ['HF_TOKEN'])\n")
    result = probe.run(comfyui.source(), [pack])
    assert not result["packs"]["leaky"]["ok"] and "secret123456" not in json.dumps(result)
    assert "KeyError" in result["packs"]["leaky"]["error"] or "HF_TOKEN" in result["packs"]["leaky"]["error"]


def test_review_findings_on_evidence_and_pins():
    """Found by an outside review: a generic pack name claimed any class containing the word; `aux_id` could be
    `../..`; a size Nix cannot hold was locked."""
    from comfyver.base.errors import UsageError

    mgr = nodemap.ManagerData()
    url, _why = nodemap.pick_by_evidence("ImageResize+", ["comfyui_essentials https://github.com/cubiq/ComfyUI_essentials",
                                                         "comfyui-image https://github.com/x/ComfyUI-Image"],
                                        {"ImageResize+"}, set(), mgr)
    assert url is None
    r = nodemap.NodeMap(core_classes={}, manager_data=mgr).decide("X", aux_id="../..")
    assert r.status == "unresolved"
    with pytest.raises(UsageError, match="2\\^63-1"):
        resolve.parse_model_source("https://example.org/x.bin", "ab" * 32, 2 ** 63)


def test_pack_code_in_the_probe_gets_no_credential_whatever_its_name(tmp_path, monkeypatch):
    """Issue 24 L4 (the same rule as the page's ComfyUI): only names like KEY/TOKEN/SECRET were dropped, so a
    pack read PIP_INDEX_URL's password, GH_PAT, DATABASE_URL. Pack code gets an allow-list of variables."""
    leaky = {"PIP_INDEX_URL": "https://me:pw1@pypi.example/simple", "GH_PAT": "ghp_pat1",
             "DATABASE_URL": "postgres://u:pw2@db/x", "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=az1",
             "LC_GH_TOKEN": "ghp_over_ssh"}  # sshd forwards LC_*: not a locale name, not passed
    for k, v in leaky.items():
        monkeypatch.setenv(k, v)
    pack = tmp_path / "nosy"
    pack.mkdir()
    (pack / "__init__.py").write_text(f"import os\nraise ImportError('SEEN=' + repr(sorted(k for k in {sorted(leaky)!r} "
                                      f"if k in os.environ)) + ' PATH=' + repr('PATH' in os.environ))\n")
    error = probe.run(comfyui.source(), [pack])["packs"]["nosy"]["error"]
    assert "SEEN=[] PATH=True" in error, error


# KJNodes' shape (kijai/ComfyUI-KJNodes, __init__.py): a config dict of {"class": Cls, "name": ...} entries, more
# added in a try block, and the mappings built by a helper that returns a tuple of two dicts
KJ_STYLE = {
    "__init__.py": (
        "from .nodes.nodes import *\n"
        "NODE_CONFIG = {\n"
        "    'INTConstant': {'class': INTConstant, 'name': 'INT Constant'},\n"
        "    'LeapfusionHunyuanI2VPatcher': {'class': LeapfusionHunyuanI2V, 'name': 'Leapfusion Hunyuan I2V Patcher'},\n"
        "    'VAELoaderKJ': {'class': VAELoaderKJ},\n"
        "}\n"
        "try:\n"
        "    from .nodes.ltxv_nodes import *\n"
        "    NODE_CONFIG.update({'LTXVEnhanceAVideoKJ': {'class': LTXVEnhanceAVideoKJ, 'name': 'LTXV Enhance'}})\n"
        "except ImportError:\n"
        "    pass\n"
        "def generate_node_mappings(node_config):\n"
        "    node_class_mappings = {}\n"
        "    node_display_name_mappings = {}\n"
        "    for node_name, node_info in node_config.items():\n"
        "        node_class_mappings[node_name] = node_info['class']\n"
        "        node_display_name_mappings[node_name] = node_info.get('name', node_info['class'].__name__)\n"
        "    return node_class_mappings, node_display_name_mappings\n"
        "NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = generate_node_mappings(NODE_CONFIG)\n"
        "__all__ = ['NODE_CLASS_MAPPINGS', 'NODE_DISPLAY_NAME_MAPPINGS']\n"),
    "nodes/nodes.py": (
        "import folder_paths\n"
        "class INTConstant: pass\n"
        "class LeapfusionHunyuanI2V: pass\n"
        "class VAELoaderKJ:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        return {'required': {'vae_name': (folder_paths.get_filename_list('vae'),)}}\n"),
    "nodes/ltxv_nodes.py": "class LTXVEnhanceAVideoKJ: pass\n",
}


def test_a_tuple_registration_is_followed_or_listed_as_unfollowed():
    """issue 28: `NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = helper(CONFIG)` (ComfyUI-KJNodes and the packs
    copied from it) was neither followed nor listed as unfollowed, so every class of the pack 'did not register'."""
    repro = nodescan.scan({"__init__.py": 'class A: pass\nCFG={"A":{"class":A}}\n'
                           'def gen(c): return {k: v["class"] for k, v in c.items()}, {}\n'
                           "NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = gen(CFG)\n"})
    assert repro.classes == {"A": []} and repro.unfollowed == []
    kj = nodescan.scan(KJ_STYLE)
    assert set(kj.classes) == {"INTConstant", "LeapfusionHunyuanI2VPatcher", "VAELoaderKJ", "LTXVEnhanceAVideoKJ"}
    assert kj.classes["VAELoaderKJ"] == [("vae_name", "vae")] and kj.unfollowed == []
    # a prefix from a module constant (f"{PREFIX}{name}"), and a literal tuple
    pre = nodescan.scan({"__init__.py": "P = 'X '\nclass A: pass\nCFG = {'A': A}\n"
                         "def gen(c):\n    m = {}\n    for n, k in c.items():\n        m[f'{P}{n}'] = k\n    return m, {}\n"
                         "NODE_CLASS_MAPPINGS, NAMES = gen(CFG)\n"
                         "class B: pass\nOTHER, NODE_CLASS_MAPPINGS = {}, {'B': B}\n"})
    assert set(pre.classes) == {"X A", "B"} and pre.unfollowed == []
    # what the scan cannot evaluate goes to the probe: listed, never dropped
    for src in ("from .x import build\nNODE_CLASS_MAPPINGS, NAMES = build()\n",
                "def gen():\n    return discover(), {}\nNODE_CLASS_MAPPINGS, NAMES = gen()\n",
                "def gen(c):\n    return {label(k): v for k, v in c.items()}, {}\nNODE_CLASS_MAPPINGS, N = gen({'A': 1})\n",
                "NODE_CLASS_MAPPINGS, *REST = make()\n"):
        s = nodescan.scan({"__init__.py": src})
        assert s.unfollowed and s.unfollowed[0].startswith("__init__.py:"), src


# ------------------------------------------------------------------ model placement (issue 28)

MANAGER_MODELS = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "comfyui-manager"


def _placement_report(class_inputs: dict[str, list[tuple[str, str]]], nodes: list[dict]):
    from comfyver.lock import analyze, nodemap

    wf = analyze.parse({str(i): n for i, n in enumerate(nodes, 1)}, "wf.json")
    nm = nodemap.NodeMap(core_classes=class_inputs, manager_data=nodemap.ManagerData())
    return analyze.report([wf], nm, class_inputs, nodemap.ManagerData.load(MANAGER_MODELS))


def test_a_value_carrying_the_folders_own_subfolder_is_not_doubled() -> None:
    """Impact's UltralyticsDetectorProvider lists `"bbox/" + name` for each file of folder ultralytics_bbox: the
    file is ultralytics_bbox/face_yolov8m.pt, and the Manager's model list (save_path ultralytics/bbox) is its
    source."""
    rep = _placement_report({"UltralyticsDetectorProvider": [("model_name", "ultralytics_bbox")]},
                            [{"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": "bbox/face_yolov8m.pt"}}])
    assert list(rep.models) == ["ultralytics_bbox/face_yolov8m.pt"]
    m = rep.models["ultralytics_bbox/face_yolov8m.pt"]
    assert m["name"] == "face_yolov8m.pt" and m["source"] == "comfyui-manager model-list"
    assert m["url"].endswith("face_yolov8m.pt")


def test_a_gguf_model_goes_where_comfyui_gguf_maps_its_folder() -> None:
    """ComfyUI-GGUF lists `unet_gguf`, which it maps onto diffusion_models (and unet): a file under unet_gguf/ is
    never offered by its loader."""
    rep = _placement_report({"UnetLoaderGGUF": [("unet_name", "unet_gguf")],
                             "CLIPLoaderGGUF": [("clip_name", "clip_gguf")]},
                            [{"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "flux1-dev-Q4_K_S.gguf"}},
                             {"class_type": "CLIPLoaderGGUF", "inputs": {"clip_name": "t5-v1_1-xxl-encoder-Q8_0.gguf"}}])
    assert set(rep.models) == {"diffusion_models/flux1-dev-Q4_K_S.gguf", "text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf"}


def test_a_folder_the_manager_model_list_knows_is_known() -> None:
    """A loader whose folder the scan could not follow (AnimateDiff-Evolved's motion-model list goes through a
    helper): the model list's one folder for that file places it."""
    name = _manager_file("animatediff_models")
    rep = _placement_report({"ADE_LoadAnimateDiffModel": []},
                            [{"class_type": "ADE_LoadAnimateDiffModel", "inputs": {"model_name": name}}])
    assert list(rep.models) == [f"animatediff_models/{name}"]
    assert rep.models[f"animatediff_models/{name}"]["source"] == "comfyui-manager model-list"


def _manager_file(save_path: str) -> str:
    import json

    entries = json.loads((MANAGER_MODELS / "model-list.json").read_text())["models"]
    names = [e["filename"] for e in entries if e.get("save_path") == save_path]
    unique = [n for n in names if sum(e["filename"] == n for e in entries) == 1]
    assert unique, f"the model list has no {save_path} file"
    return unique[0]


def test_an_aux_id_names_a_github_repository_and_nothing_else():
    """nodemap.aux_id_url: `owner/repo` is that GitHub repository; a path, `..`, a URL or a blank is no evidence."""
    assert nodemap.aux_id_url("rgthree/rgthree-comfy") == "https://github.com/rgthree/rgthree-comfy"
    assert nodemap.aux_id_url("o.k/re_po-1.x") == "https://github.com/o.k/re_po-1.x"
    for bad in (None, "", "../..", "owner/..", "./repo", "a/b/c", "https://github.com/a/b", "owner repo/x", "repo"):
        assert nodemap.aux_id_url(bad) is None, bad


def test_a_cnr_id_takes_a_release_from_the_registry_and_a_commit_from_the_repository():
    """nodemap.cnr_pack: a saved release version is the registry's; a saved commit (or none) is the repository's
    where ComfyUI-Manager knows it; else the registry's latest (a commit the registry cannot serve is dropped)."""
    url, commit = "https://github.com/ltdrdata/ComfyUI-Impact-Pack", "a" * 40
    assert nodemap.cnr_pack("ComfyUI-Impact-Pack", "8.8.1", url) == nodemap.Pack(
        "comfyui-impact-pack", None, "ComfyUI-Impact-Pack", "8.8.1")
    assert nodemap.cnr_pack("ComfyUI-Impact-Pack", commit, url) == nodemap.Pack(
        "comfyui-impact-pack", url, "ComfyUI-Impact-Pack", commit)
    assert nodemap.cnr_pack("ComfyUI-Impact-Pack", None, url).version is None
    assert nodemap.cnr_pack("ComfyUI-Impact-Pack", commit, None) == nodemap.Pack(
        "comfyui-impact-pack", None, "ComfyUI-Impact-Pack", None)


def test_preemptions_decide_only_when_one_pack_claims_the_class():
    """nodemap.preempting: among several listers the one whose `preemptions` claim the class; claimers that list
    it count first; two claimers (or none) decide nothing."""
    a, b, c = "https://github.com/x/a", "https://github.com/x/b", "https://github.com/x/c"
    assert nodemap.preempting([a, b], [b]) == b
    assert nodemap.preempting([a, b], [b, c]) == b       # c claims it but does not list it
    assert nodemap.preempting([a, b], [c]) == c          # no lister claims it: the one claimer
    assert nodemap.preempting([a, b], [a, b]) is None
    assert nodemap.preempting([a, b], []) is None


def test_the_evidence_order_of_decide():
    """NodeMap.decide takes the first step that decides, in docs/lock.md's order: what you gave (overrides.json,
    --choose, the lock, the locked core) before the node's properties, those before ComfyUI-Manager's node map."""
    mgr = nodemap.ManagerData()
    mgr.exact = {"C": ["https://github.com/x/listed-pack"]}
    override = nodemap.Pack("mine", "https://github.com/me/mine")
    locked = {"locked-pack": {"original": {"type": "git", "url": "https://github.com/x/locked-pack"},
                              "locked": {"url": "https://github.com/x/locked-pack"}, "provides": ["C"]}}

    def via(**kw):
        return nodemap.NodeMap(manager_data=mgr, **kw).decide("C", cnr_id="some-pack", ver="1.0.0").via

    assert via(core_classes={"C": []}, overrides={"C": override}, choices={"C": "listed-pack"}, locked_nodes=locked) \
        == "override"
    assert via(core_classes={"C": []}, choices={"C": "listed-pack"}, locked_nodes=locked) == "choice"
    assert via(core_classes={"C": []}, locked_nodes=locked) == "lock"
    assert via(core_classes={"C": []}) == "core-scan"
    assert via(core_classes={}) == "cnr_id"
    assert nodemap.NodeMap(core_classes={}, manager_data=mgr).decide("C").via == "manager"
    assert nodemap.NodeMap(core_classes={}, manager_data=mgr).decide("Note").status == "virtual"


def test_a_registration_without_model_inputs_never_erases_one_with_them():
    """nodescan.scan: a class id registered twice keeps the model inputs either registration found (a later one
    with inputs wins, one without erases nothing); a class with none of its own takes its first pack base's that
    has some, and a base outside the pack stays in `inherits` for the caller."""
    src = '''
import folder_paths
class Loader:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}
class Plain:
    pass
class Child(Plain, Loader):
    pass
class Outside(CheckpointLoaderSimple):
    pass
NODE_CLASS_MAPPINGS = {"X": Plain, "Y": Loader, "C": Child, "O": Outside}
NODE_CLASS_MAPPINGS["X"] = Loader
NODE_CLASS_MAPPINGS["Y"] = Plain
'''
    scan = nodescan.scan({"n.py": src})
    ckpt = [("ckpt_name", "checkpoints")]
    assert scan.classes == {"X": ckpt, "Y": ckpt, "C": ckpt, "O": []}
    assert scan.inherits == {"O": ["CheckpointLoaderSimple"]} and scan.unfollowed == []
