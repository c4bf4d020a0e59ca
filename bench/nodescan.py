"""Node knowledge on the real corpus (../shared/data/node-packs): static scan recall against the runtime probe,
per pack, and the probe's time cold (ComfyUI's node loading) and cached (a lock's repeated probe).

    python bench/nodescan.py [--json]

Prints, per pack: import ok, classes probe / static found, model inputs (input, folder) probe / static found,
the scan's own unfollowed registrations, the pack's import seconds; then the totals and the timings side by
side: probe cold vs cached, static scan cold vs cached.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    os.environ.setdefault("COMFYVER_CACHE", tempfile.mkdtemp(prefix="bench-nodescan-"))
    from comfyver.base import project
    from comfyver.base.fsutil import atomic_write_json
    from comfyver.lock import nodemap, nodescan, probe

    from tests.support import comfyui, nodepacks

    packs = {p["name"]: nodepacks.checkout(p) for p in nodepacks.packs()}
    t = time.perf_counter()
    result = probe.run(comfyui.source(), list(packs.values()))
    probe_cold = time.perf_counter() - t
    cache = project.cache_dir() / "probe" / "bench.json"
    atomic_write_json(cache, result)
    t = time.perf_counter()
    json.loads(cache.read_text())
    probe_cached = time.perf_counter() - t
    core = probe.model_inputs({"classes": {c: v for c, v in result["classes"].items() if v["pack"] == "comfy-core"}})
    rows, tot = [], {"classes": 0, "found": 0, "inputs": 0, "inputs_found": 0}
    t = time.perf_counter()
    scans = {name: nodemap.scan_tree_full(tree) for name, tree in packs.items()}
    scan_cold = time.perf_counter() - t
    t = time.perf_counter()
    for s in scans.values():
        nodescan.Scan.from_json(json.loads(json.dumps(s.to_json())))
    scan_cached = time.perf_counter() - t
    for name, tree in packs.items():
        p = result["packs"][tree.name]
        scan = scans[name]
        nodescan.resolve_inherited(scan.classes, scan.inherits, core)
        row = {"pack": name, "ok": p["ok"], "seconds": p["seconds"], "static_classes": len(scan.classes),
               "unfollowed": len(scan.unfollowed), "error": (p["error"] or "")[-90:] if not p["ok"] else ""}
        if p["ok"]:
            want = [(c, tuple(x)) for c in p["classes"] for x in result["classes"][c]["model_inputs"]]
            row.update(classes=len(p["classes"]), found=len(set(p["classes"]) & set(scan.classes)),
                       inputs=len(want), inputs_found=sum(1 for c, x in want if x in set(scan.classes.get(c, []))))
            for k in tot:
                tot[k] += row[k]
        rows.append(row)
    out = {"packs": rows, "totals": tot, "class_recall": round(tot["found"] / tot["classes"], 3),
           "input_recall": round(tot["inputs_found"] / max(1, tot["inputs"]), 3),
           "probe_cold_s": round(probe_cold, 2), "probe_core_s": result["core_seconds"],
           "probe_cached_s": round(probe_cached, 4), "scan_cold_s": round(scan_cold, 2),
           "scan_cached_s": round(scan_cached, 4)}
    if "--json" in sys.argv:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'pack':<34} {'ok':<3} {'classes':>13} {'model inputs':>13} {'unfoll.':>7} {'import s':>8}")
    for r in rows:
        if r["ok"]:
            print(f"{r['pack']:<34} yes {r['found']:>5} / {r['classes']:<5} {r['inputs_found']:>5} / {r['inputs']:<5}"
                  f" {r['unfollowed']:>7} {r['seconds']:>8.2f}")
        else:
            print(f"{r['pack']:<34} no  static {r['static_classes']:<5}  import failed: {r['error']}")
    print(f"\nstatic recall vs probe: classes {tot['found']}/{tot['classes']} = {out['class_recall']}, "
          f"model-input folders {tot['inputs_found']}/{tot['inputs']} = {out['input_recall']}")
    print(f"probe: cold {probe_cold:.2f} s (core {result['core_seconds']:.2f} s), cached {probe_cached * 1000:.1f} ms "
          f"(ratio {probe_cold / max(probe_cached, 1e-6):,.0f}x)")
    print(f"static scan: cold {scan_cold:.2f} s, cached {scan_cached * 1000:.1f} ms; "
          f"probe cold / scan cold = {probe_cold / max(scan_cold, 1e-6):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
