"""`comfyver probe <id>`: run ComfyUI's node loading in a realized version and compare it with the lock."""

from __future__ import annotations

import json
from pathlib import Path

from comfyver.base import project
from comfyver.cli.args import verb
from comfyver.lock import probe, versions
from comfyver.realize import realize


def register(sub) -> None:
    p = verb(sub, "probe", run, help="load every node of a realized version in ComfyUI and compare with the lock",
             description="Run ComfyUI's own node loading (core and every pack, on the CPU) in the realized "
                         "version's .venv; record every registered class, its model folders and each pack's "
                         "import error; compare with the lock's `provides`. Cached by core rev, node hashes and "
                         "uv.lock. Exit 1 if a pack fails to import or a recorded class is not registered. "
                         "Example: comfyver realize sdxl && comfyver probe sdxl --record")
    p.add_argument("id", help="version id")
    p.add_argument("--dir", type=Path, metavar="DIR", help="realized folder (default: <cache>/realized/<id>)")
    p.add_argument("--refresh", action="store_true", help="probe again even if a cached result exists")
    p.add_argument("--record", action="store_true", help="write the probe's classes into the lock's `provides`")


def run(args) -> int:
    root = project.find_root()
    lock = versions.load(root, args.id)
    into = (args.dir or realize.default_into(args.id)).absolute()
    result = probe.for_version(lock, (project.version_dir(root, args.id) / "uv.lock").read_bytes(), into,
                               refresh=args.refresh)
    recorded = probe.record(root, args.id, result) if args.record else []
    found = probe.compare(versions.load(root, args.id), result)
    bad = [f for f in found if f["kind"] in ("import-failed", "not-registered", "not-loaded")]
    if args.json:
        print(json.dumps({"id": args.id, "ok": not bad, "cached": result["cached"], "seconds": result["seconds"],
                          "packs": result["packs"], "findings": found, "recorded": recorded}, indent=2))
        return 1 if bad else 0
    for name, p in sorted(result["packs"].items()):
        state = f"{len(p['classes'])} class(es)" if p["ok"] else "IMPORT FAILED"
        print(f"{name:<40} {state:<16} {p['seconds']:>7.2f} s")
    for f in found:
        print(f"{f['kind']}: node {f['node']}: {f['detail']}")
    if recorded:
        print(f"recorded the probe's classes as provides of: {', '.join(recorded)}")
    print(f"probe {'(cached) ' if result['cached'] else ''}took {result['seconds']:.1f} s: "
          + ("matches the lock" if not found else f"{len(found)} finding(s)"))
    return 1 if bad else 0
