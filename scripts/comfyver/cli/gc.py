"""`comfyver gc`: list leftovers of interrupted runs (and with --blobs unused model blobs); --yes removes them."""

from __future__ import annotations

import json
from pathlib import Path

from comfyver.base import project
from comfyver.base.errors import ComfyverError
from comfyver.cli.args import verb
from comfyver.realize import gc


def register(sub) -> None:
    p = verb(sub, "gc", run, help="list (and with --yes remove) leftovers and unused model blobs",
             description="Find what interrupted runs left: realize temp and old trees, partial downloads, "
                         "scratch folders; with --blobs also model-store blobs that no version of this project "
                         "locks (other projects sharing the store may still use them). A dry run unless --yes. "
                         "Example: comfyver gc --blobs --yes")
    p.add_argument("--yes", action="store_true", help="remove what is listed")
    p.add_argument("--blobs", action="store_true", help="also list model blobs no version of this project uses")
    p.add_argument("--proof-envs", action="store_true",
                   help="also list the Python environments `lock` made to prove versions (<cache>/proof-envs; "
                        "the next lock that needs one makes it again from uv's cache)")
    p.add_argument("--models-dir", type=Path, metavar="DIR", help="model store (default: $COMFYVER_MODELS or <cache>/models)")
    p.add_argument("--min-age", type=float, default=3600, metavar="SECONDS",
                   help="leave entries younger than this alone (default 3600: a run may still own them)")


def run(args) -> int:
    try:
        root = project.find_root()
    except ComfyverError:  # outside a project: the caches only
        root = None
    items = gc.plan(root, args.models_dir, blobs=args.blobs, proof_envs=args.proof_envs, min_age=args.min_age)
    freed = gc.remove(items) if args.yes else 0
    if args.json:
        print(json.dumps({"removed": args.yes, "bytes": sum(i.bytes for i in items),
                          "items": [i.as_json() for i in items]}, indent=2))
        return 0
    for i in items:
        print(f"{i.kind:<17} {i.bytes:>14,} B  {i.path}")
    total = sum(i.bytes for i in items)
    if args.yes:
        print(f"removed {len(items)} item(s), {freed:,} bytes")
    else:
        print(f"{len(items)} item(s), {total:,} bytes" + (" (dry run: --yes removes them)" if items else ""))
    return 0
