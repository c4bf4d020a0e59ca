"""`comfyver verify <id>`: does a realized folder match its lock? Exit 1 with a table if not."""

from __future__ import annotations

import json
from pathlib import Path

from comfyver.base import project
from comfyver.cli.args import verb
from comfyver.realize import realize, verify


def register(sub) -> None:
    p = verb(sub, "verify", run, help="check a realized folder against its lock",
                       description="Compare a realized version with its lock: core and node revs (NAR hashes "
                                   "with --deep), Python packages vs uv.lock (RECORD hashes with --deep), models' "
                                   "sha256 (stat-cached), and with --runtime that ComfyUI serves every class the "
                                   "workflows use. Exit 1 and a table of mismatches if anything differs. "
                                   "Example: comfyver verify sdxl-base --dir /workspace/sdxl --deep")
    p.add_argument("id", help="version id")
    p.add_argument("--dir", type=Path, metavar="DIR", help="realized folder (default: <cache>/realized/<id>)")
    p.add_argument("--deep", action="store_true", help="re-hash every source file and installed package file")
    p.add_argument("--runtime", action="store_true", help="start ComfyUI and check /object_info")
    p.add_argument("--runtime-arg", action="append", default=[], metavar="ARG",
                   help="extra ComfyUI argument for --runtime (repeatable), e.g. --runtime-arg=--cpu")


def run(args) -> int:
    root = project.find_root()
    into = (args.dir or realize.default_into(args.id)).absolute()
    found = verify.verify(root, args.id, into, deep=args.deep, runtime=args.runtime, comfy_args=args.runtime_arg,
                          reporter=realize.Reporter(quiet=args.json))
    if args.json:
        print(json.dumps({"id": args.id, "dir": str(into), "ok": not found, "deep": args.deep,
                          "mismatches": [m.as_dict() for m in found]}, indent=2))
    elif not found:
        print(f"version {args.id} at {into}: matches its lock" + (" (deep)" if args.deep else ""))
    else:
        from rich.console import Console
        from rich.table import Table

        from comfyver.base import ui

        table = Table(title=ui.text(f"version {args.id} at {into}: {len(found)} mismatch(es)"))
        for col in ("kind", "name", "expected", "found"):
            table.add_column(col, overflow="fold")
        for m in found:  # file names and contents of the folder checked: never markup
            table.add_row(*(ui.text(v) for v in (m.kind, m.name, m.expected, m.found)))
        Console().print(table)
    return 1 if found else 0
