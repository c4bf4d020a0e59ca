"""`comfyver models sync|ls|verify`: a version's models into a store folder or onto RunPod network volumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict, final

from comfyver.base import lockfile, project
from comfyver.base.errors import UsageError
from comfyver.base.lockfile import Lock
from comfyver.cli.args import verb
from comfyver.realize import realize
from comfyver.ship import volume
from comfyver.sources import modelstore


@final  # no other keys: `"bytes_sent" in r` tells a volume's SyncResult from it
class StoreSync(TypedDict):
    """What sync did in a store folder."""
    target: str
    models: dict[str, str]  # key -> what was done


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
                                    "runpod://VOLUME targets are written through RunPod's S3 API "
                                    "(models/sha256/<hex>, keys from RUNPOD_S3_ACCESS_KEY/RUNPOD_S3_SECRET_KEY), "
                                    "skipping what is there, resuming a cut multipart upload and verifying "
                                    "each object. Example: comfyver models sync sdxl-base --to "
                                    "/runpod-volume/models --from /workspace/ComfyUI/models; comfyver models "
                                    "sync sdxl-base --to runpod://abc123xyz --to runpod://def456uvw")
    s.add_argument("id", help="version id")
    s.add_argument("--to", action="append", metavar="DIR|runpod://VOLUME",
                   help="target: a store folder, or a RunPod network volume through its S3 API (repeatable; "
                        "default: $COMFYVER_MODELS or <cache>/models)")
    s.add_argument("--from", dest="source", type=Path, metavar="DIR",
                   help="seed from DIR/<folder>/<name> or DIR/sha256/<hex> where the bytes match the lock")
    s.add_argument("--offline", action="store_true", help="never download; fail naming the models still missing")
    s.add_argument("--rehash", action="store_true",
                   help="hash every blob again instead of trusting the stat cache (size, mtime, inode); on a "
                        "volume, read back every object and upload again what does not hash right")
    _volume_args(s)
    s.add_argument("--part-size", type=int, default=volume.DEFAULT_PART >> 20, metavar="MiB",
                   help="multipart part size for volumes (default %(default)s; 5 to 1024)")
    s.add_argument("--jobs", type=int, default=8, help="parts uploaded at once per file (default %(default)s)")
    for name, run, what in (("ls", run_ls, "what a network volume holds of a version (object metadata only)"),
                            ("verify", run_verify, "read every model of a version back from a network volume "
                                                   "and check its sha256")):
        v = verb(msub, name, run, help=what,
                 description=f"{what[0].upper()}{what[1:]}. Exit 1 when a model is missing or differs. "
                             f"Example: comfyver models {name} runpod://abc123xyz sdxl-base")
        v.add_argument("target", metavar="runpod://VOLUME")
        v.add_argument("ids", nargs="*", metavar="ID", help="versions (default: every version of the project)")
        _volume_args(v)


def _volume_args(p) -> None:
    p.add_argument("--datacenter", metavar="DC",
                   help="the volumes' datacenter (e.g. EU-RO-1); default: asked of RunPod's API ($RUNPOD_API_KEY)")


def _open(target: str, args, workers: int = 4) -> volume.Volume:
    return volume.open_volume(target, args.datacenter, workers=workers)


def run_sync(args) -> int:
    root = project.find_root()
    lock = lockfile.read(project.lock_path(root, args.id))
    if args.source is not None and not args.source.is_dir():
        raise UsageError(f"--from {args.source}: no such folder", hint="give a ComfyUI models folder or a model store")
    if not 5 <= args.part_size <= 1024:
        raise UsageError(f"--part-size {args.part_size}: give 5 to 1024 MiB (S3 parts are at least 5 MiB; "
                         "each part in flight is held in memory)")
    if not 1 <= args.jobs <= 64:
        raise UsageError(f"--jobs {args.jobs}: give 1 to 64")
    targets = args.to or [str(modelstore.default_store())]
    local_store = Path(modelstore.default_store()).absolute()
    volumes = {t: _open(t, args, args.jobs) for t in targets if volume.is_target(t)}  # all looked up first
    rep = realize.Reporter(quiet=args.json)

    def progress_for(key: str, size: int):
        rep.step(f"model {key} ({size} bytes)")
        return rep.bytes(key, size)

    results: list[volume.SyncResult | StoreSync] = []
    for t in targets:
        if volume.is_target(t):
            vol = volumes[t]
            rep.step(f"volume {vol.target} in {vol.datacenter}")
            results.append(volume.sync_version(lock, vol, store=local_store, source=args.source,
                                               offline=args.offline, rehash=args.rehash,
                                               part_size=args.part_size << 20,
                                               workers=args.jobs, progress_for=progress_for))
        else:
            store = Path(t).absolute()
            results.append({"target": str(store), "models": modelstore.sync(
                lock, store, source=args.source, offline=args.offline, rehash=args.rehash,
                progress_for=progress_for)})
    if args.json:
        print(json.dumps({"id": args.id, "targets": results}, indent=2))
        return 0
    for r in results:
        for key, action in r["models"].items():
            print(f"{action:10} {key}")
        extra = (f": {r['bytes_sent']} bytes sent, {r['bytes_skipped']} already there, {r['verified']} verified "
                 "after upload") if "bytes_sent" in r else ""
        print(f"{len(r['models'])} model(s) of version {args.id} in {r['target']}{extra}")
    return 0


def _versions(root: Path, ids: list[str]) -> dict[str, Lock]:
    ids = ids or sorted(p.parent.name for p in (root / "versions").glob("*/version.json"))
    return {vid: lockfile.read(project.lock_path(root, vid)) for vid in ids}


def run_ls(args) -> int:
    root = project.find_root()
    locks = _versions(root, args.ids)
    vol = _open(args.target, args)
    found = {vid: volume.list_version(lock, vol) for vid, lock in locks.items()}
    bad = sum(m["status"] != "present" for models in found.values() for m in models.values())
    if args.json:
        print(json.dumps({"target": vol.target, "datacenter": vol.datacenter, "versions": found}, indent=2))
    else:
        for vid, models in found.items():
            for key, m in models.items():
                print(f"{vid:20} {m['status']:10} {m['size']:>14}  {key}")
        print(f"{vol.target} ({vol.datacenter}): {bad} model(s) missing or different" if bad
              else f"{vol.target} ({vol.datacenter}) holds every model of {', '.join(found) or 'no version'}")
    return 1 if bad else 0


def run_verify(args) -> int:
    root = project.find_root()
    locks = _versions(root, args.ids)
    vol = _open(args.target, args)
    rep = realize.Reporter(quiet=args.json)
    found = {vid: volume.verify_version(lock, vol, progress_for=rep.bytes) for vid, lock in locks.items()}
    bad = {f"{vid} {key}": what for vid, r in found.items() for key, what in r.items() if what != "ok"}
    if args.json:
        print(json.dumps({"target": vol.target, "datacenter": vol.datacenter, "versions": found, "ok": not bad},
                         indent=2))
    else:
        for vid, r in found.items():
            for key, what in r.items():
                print(f"{vid:20} {what if what in ('ok', 'missing') else 'DIFFERS':10} {key}"
                      + (f"  ({what})" if what not in ("ok", "missing") else ""))
        print(f"{vol.target}: {len(bad)} model(s) wrong or missing; run `comfyver models sync <id> --to "
              f"{vol.target} --rehash` to upload them again" if bad else f"{vol.target}: every model verified")
    return 1 if bad else 0
