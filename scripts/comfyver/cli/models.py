"""`comfyver models sync <id>`: fill a model store (e.g. a network volume) with a version's models."""

from __future__ import annotations

import json
from pathlib import Path

from comfyver.base import lockfile, project
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.realize import realize
from comfyver.sources import modelstore


def register(sub) -> None:
    p = sub.add_parser("models", help="manage the content-addressed model store",
                       description="Model store commands. Example: comfyver models sync sdxl-base --to /runpod-volume/models")
    msub = p.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    s = verb(msub, "sync", run_sync, help="fetch and verify every model of a version into a store",
                        description="Put every model of a version into a content-addressed store "
                                    "(<DIR>/sha256/<hex>), the layout `comfyver realize --models-dir` and the "
                                    "handler read. --from seeds from files you already have (a ComfyUI models "
                                    "folder or another store), verifying each and copying only what is missing; "
                                    "the rest is downloaded (resumed if interrupted) unless --offline. "
                                    "Example: comfyver models sync sdxl-base --to /runpod-volume/models "
                                    "--from /workspace/ComfyUI/models")
    s.add_argument("id", help="version id")
    s.add_argument("--to", type=Path, metavar="DIR", help="target store (default: $COMFYVER_MODELS or <cache>/models)")
    s.add_argument("--from", dest="source", type=Path, metavar="DIR",
                   help="seed from DIR/<folder>/<name> or DIR/sha256/<hex> where the bytes match the lock")
    s.add_argument("--offline", action="store_true", help="never download; fail naming the models still missing")
    s.add_argument("--rehash", action="store_true",
                   help="hash every blob again instead of trusting the stat cache (size, mtime, inode)")


def run_sync(args) -> int:
    root = project.find_root()
    lock = lockfile.read(project.lock_path(root, args.id))
    store = Path(args.to or modelstore.default_store()).absolute()
    if args.source is not None and not args.source.is_dir():
        raise UsageError(f"--from {args.source}: no such folder", hint="give a ComfyUI models folder or a model store")
    rep = realize.Reporter(quiet=args.json)

    def progress_for(key: str, size: int):
        rep.step(f"model {key} ({size} bytes)")
        return rep.bytes(key, size)

    done = modelstore.sync(lock, store, source=args.source, offline=args.offline, rehash=args.rehash,
                          progress_for=progress_for)
    if args.json:
        print(json.dumps({"id": args.id, "store": str(store), "models": done}, indent=2))
    else:
        for key, action in done.items():
            print(f"{action:10} {key}")
        print(f"{len(done)} model(s) of version {args.id} in {store}")
    return 0
