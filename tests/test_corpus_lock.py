"""Example workflows of the real node-pack corpus (../shared/data/node-packs-v2: the packs with their history, the
real ComfyUI history as comfyanonymous/ComfyUI), locked with one command, offline (tests/support/corpuslock.py):
each either locks (with --model --sha256 --size only for models no source is knowable for offline; `--probe` with
this interpreter, so provides is what ComfyUI registers and the lock is proven) and then `check` passes and a second
`lock` adds nothing, or fails only for a reason that cannot be mended here, named (corpuslock.classify).

A sample (the whole corpus takes about 20 minutes: `python bench/corpus_lock.py` runs all 139 and prints the
figures): a workflow that locks from each pack that has one, the corpus' seams (a pack whose default branch head the
snapshot cannot send; a pack whose only release does not import on the core), and one workflow per reason the others
do not lock."""

from __future__ import annotations

import json
import sys

from tests.support import corpuslock

# the sample: a workflow that locks from each pack that has one, and each reason the others do not
LOCKS = ["lora_workflow.json", "image_tiles.json", "06-seamless_equilateral.json", "general_tests.json",
         "workflow_all_nodes.json", "CR_Simple_Banner_demo2.json", "ipadapter_faceid.json",
         "canny_workflow.json",     # comfyui_controlnet_aux, its snapshot head unsendable: served at the pinned commit
         "inpaint-simple.json",     # comfyui-inpaint-nodes: its only tag does not import on 0.3.75, its head does
         "basic-usdu.json",         # ComfyUI_UltimateSDUpscale: locked with its submodule (else it downloads at import)
         "InstantID_IPAdapter.json"]  # ComfyUI_InstantID: insightface in the probe's interpreter (the test extra)
FAILS = {"CR_Image_Grid_Panel_demo2.json": corpuslock.UNSERVABLE,
         "LTX-2_I2V_Distilled_wLora.json": corpuslock.NEWER_CORE,
         "inpaint-cropandstitch_example_workflow.json": corpuslock.OFFLINE_UNKNOWN}


def test_the_corpus_example_workflows_lock_with_one_command(tmp_path):
    srv, proj, env = corpuslock.setup(tmp_path)
    sample = [(vid, wf) for vid, wf in corpuslock.workflows() if wf.name in LOCKS or wf.name in FAILS]
    try:
        outcomes = {wf.name: corpuslock.lock_one(proj, env, vid, wf, sys.executable) for vid, wf in sample}
    finally:
        srv.close()
    assert sorted(outcomes) == sorted(LOCKS + list(FAILS))
    why = {name: corpuslock.classify(o) for name, o in outcomes.items()}
    assert {n: why[n] for n in LOCKS} == dict.fromkeys(LOCKS, "locked"), {n: outcomes[n].problems[:2] for n in LOCKS}
    assert {n: why[n] for n in FAILS} == FAILS
    for name in LOCKS:  # check and a warm re-lock agree with the lock; every lock proven by the probe
        o = outcomes[name]
        assert (o.check_rc, o.relock_rc, o.relock_added, o.knowledge) == (0, 0, [], "probe"), o
    assert any("the default branch head" in n for n in outcomes["inpaint-simple.json"].notes)
    assert any("locked with its git submodules" in n for n in outcomes["basic-usdu.json"].notes)
    # provides equals what ComfyUI registers, for every pack that imports
    probes = [json.loads(f.read_text()) for f in (tmp_path / "cache" / "probe").glob("*.json")]
    checked = 0
    for vdir in (proj / "versions").iterdir():
        if not (vdir / "version.json").is_file():
            continue
        lock = json.loads((vdir / "version.json").read_text())
        for name, n in lock["nodes"].items():
            seen = [p["packs"][name] for p in probes if name in p.get("packs", {}) and p["packs"][name]["ok"]]
            if seen:  # one of the probes of this pack: comfy_mtb's own loader drops a module now and then
                assert any(n["provides"] == sorted(s["classes"]) for s in seen), (name, [len(s["classes"]) for s in seen])
                checked += 1
    assert checked >= 8
