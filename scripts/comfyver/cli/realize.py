"""`comfyver realize <id>` and `comfyver fetch <id>`: a version as a folder with its own .venv."""

from __future__ import annotations

import json
from pathlib import Path

from comfyver.base import project
from comfyver.cli.args import verb
from comfyver.realize import realize


def register(sub) -> None:
    p = verb(sub, "realize", run_realize, help="materialize a version into a folder (no Nix)",
                       description="Write ComfyUI, every custom node (NAR-verified), a .venv from uv.lock "
                                   "(`uv sync --frozen`) and links to the models (content-addressed store) into "
                                   "a folder. Atomic and idempotent: a second run of an unchanged version is a "
                                   "no-op. Example: comfyver realize sdxl-base --into /workspace/sdxl "
                                   "--models-dir /runpod-volume/models")
    p.add_argument("id", help="version id (versions/<id>/version.json)")
    p.add_argument("--into", type=Path, metavar="DIR", help="target folder (default: <cache>/realized/<id>)")
    p.add_argument("--models-dir", type=Path, metavar="DIR",
                   help="model store, <DIR>/sha256/<hex> (default: $COMFYVER_MODELS or <cache>/models)")
    p.add_argument("--offline", action="store_true", help="use only the caches (fill them with `comfyver fetch`)")
    p.add_argument("--system-site-packages", action="store_true",
                   help="let the .venv see the interpreter's own packages (e.g. a preinstalled torch)")
    p.add_argument("--find-links", metavar="DIR", action="append", default=[],
                   help="extra wheel folder for uv (repeatable); UV_* environment settings pass through too")
    p.add_argument("--rehash", action="store_true",
                   help="hash every model again instead of trusting the stat cache (size, mtime, inode)")

    s = verb(sub, "switch", run_switch, help="make a folder (e.g. /workspace/ComfyUI) the realized tree of a version",
             description="Realize version ID beside PATH (.<name>.comfyver/versions/<id>, kept for switching back), "
                         "then point PATH at it with one atomic link swap; a `comfyver run --at PATH` running there "
                         "restarts ComfyUI on it. PATH must be new or a link `switch` made. Models stay shared through "
                         "the model store. Example: comfyver switch sdxl-v2 --at /workspace/ComfyUI "
                         "--models-dir /runpod-volume/models")
    s.add_argument("id", help="version id (versions/<id>/version.json)")
    s.add_argument("--at", type=Path, required=True, metavar="PATH", help="the ComfyUI folder to switch (a link)")
    s.add_argument("--models-dir", type=Path, metavar="DIR",
                   help="model store, <DIR>/sha256/<hex> (default: $COMFYVER_MODELS or <cache>/models)")
    s.add_argument("--offline", action="store_true", help="use only the caches (fill them with `comfyver fetch`)")
    s.add_argument("--system-site-packages", action="store_true",
                   help="let the .venv see the interpreter's own packages (e.g. a preinstalled torch)")
    s.add_argument("--find-links", metavar="DIR", action="append", default=[], help="extra wheel folder for uv")

    f = sub.add_parser("fetch", help="fill the caches for a later `realize --offline`",
                       description="Fetch git objects, node archives, wheels (into uv's cache) and models "
                                   "(into the model store) of a version, so that `comfyver realize <id> "
                                   "--offline` needs no network. Example: comfyver fetch sdxl-base")
    f.add_argument("id", help="version id")
    f.add_argument("--models-dir", type=Path, metavar="DIR", help="model store (default: $COMFYVER_MODELS or <cache>/models)")
    f.add_argument("--find-links", metavar="DIR", action="append", default=[], help="extra wheel folder for uv")
    f.add_argument("--json", action="store_true", help="machine output")
    f.set_defaults(func=run_fetch)


def _uv_args(args) -> list[str]:
    return [a for d in args.find_links for a in ("--find-links", d)]


def run_realize(args) -> int:
    root = project.find_root()
    into = realize.realize(root, args.id, args.into, args.models_dir, args.offline,
                           system_site_packages=args.system_site_packages, uv_args=_uv_args(args),
                           rehash=args.rehash, reporter=realize.Reporter(quiet=args.json))
    if args.json:
        print(json.dumps({"id": args.id, "path": str(into)}))
    else:
        print(into)
    return 0


def run_switch(args) -> int:
    from comfyver.realize import switch

    done = switch.switch(project.find_root(), args.id, args.at, models_dir=args.models_dir, offline=args.offline,
                         system_site_packages=args.system_site_packages, uv_args=_uv_args(args),
                         reporter=realize.Reporter(quiet=args.json))
    if args.json:
        print(json.dumps(switch.as_json(done)))
        return 0
    if not done.changed:
        print(f"{done.at} is version {done.version} already (realized from its current lock): nothing to do")
        return 0
    print(f"{done.at} -> version {done.version}" + (f" (was {done.previous}; `comfyver switch {done.previous} --at "
                                                    f"{done.at}` goes back)" if done.previous else ""))
    if done.restarted:
        print(f"ComfyUI restarted on it (comfyver run --at, pid {done.restarted})")
    return 0


def run_fetch(args) -> int:
    root = project.find_root()
    out = realize.fetch(root, args.id, args.models_dir, uv_args=_uv_args(args),
                        reporter=realize.Reporter(quiet=args.json))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"fetched version {args.id}: core, {out['nodes']} nodes, {out['models']} models, wheels")
    return 0
