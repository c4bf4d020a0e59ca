"""`comfyver import <id> FILE`: a version from a ComfyUI-Manager snapshot or a config.yml."""

from __future__ import annotations

import json

from comfyver.base import project
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.lock import importers, pylock, versions


def register(sub) -> None:
    p = verb(sub, "import", run, help="create a version from a ComfyUI-Manager snapshot or a config.yml",
                       description="Create a version from what you have today: a ComfyUI-Manager snapshot "
                                   "(comfyui commit, git_custom_nodes, cnr_custom_nodes; pips are compared with the "
                                   "Python lock) or a config.yml (nodes with url/version, models with "
                                   "url/destination/optional). Example: comfyver import prod snapshot.json")
    p.add_argument("vid", metavar="ID", help="new version id")
    p.add_argument("file", metavar="FILE", help="snapshot (.json/.yaml) or config.yml")
    p.add_argument("--comfyui-url", default=versions.DEFAULT_COMFYUI_URL, help="ComfyUI repository")
    p.add_argument("--no-python", action="store_true", help="skip pyproject.toml / uv.lock")


def run(args) -> int:
    root = project.find_root()
    with versions.writing(root, args.vid):
        return _run(root, args)


def _run(root, args) -> int:
    if versions.exists(root, args.vid):
        raise UsageError(f"version {args.vid!r} already exists", hint="pick another id, or `comfyver delete` it first")
    pl = importers.plan(importers.read(args.file), args.file, args.comfyui_url)
    lock = importers.build(args.vid, pl, progress=not args.json)
    vdir = project.version_dir(root, args.vid)
    if not args.no_python:
        text, reqs, pynotes = pylock.generate(lock)
        pl.notes.extend(pynotes)
        pylock.uv_lock(vdir, text, reqs, f"version {args.vid}")
        if note := pylock.settle_profile(lock, vdir):
            pl.notes.append(note)
    versions.save(root, args.vid, lock)
    if not args.no_python and pl.pips:
        pl.notes.extend(importers.pip_differences(pl, versions.python_packages(root, args.vid)))
    out = {"version": args.vid, "from": pl.kind, "nodes": sorted(lock["nodes"]), "models": sorted(lock["models"]),
           "comfyui": lock["comfyui"]["locked"]["rev"], "notes": pl.notes}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"imported {pl.kind} into version {args.vid}: ComfyUI {out['comfyui'][:12]}, "
              f"{len(out['nodes'])} node(s), {len(out['models'])} model(s)")
        for n in pl.notes:
            print(f"note: {n}")
    return 0
