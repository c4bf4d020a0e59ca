"""`comfyver lock <id> --workflow W...`: parse, call `lock.pipeline.lock_version`, print the result or the fix table."""

from __future__ import annotations

import argparse
import json
import sys

from comfyver.base import project
from comfyver.base.errors import UsageError
from comfyver.lock import versions
from comfyver.lock.check import ProblemRow
from comfyver.lock.pipeline import LockProblems, lock_version, pairs
from comfyver.sources import resolve


def register(sub) -> None:
    p = sub.add_parser("lock", help="lock a version from workflows: nodes, models, Python packages",
                       description="Analyze workflows, resolve every node pack and model they need, copy the "
                                   "workflows into versions/<id>/workflows/ and write the lock plus the Python "
                                   "lock (pyproject.toml, uv.lock), once ComfyUI has loaded the nodes in the "
                                   "version's own Python environment and every workflow passed the proof. "
                                   "Example: comfyver lock sdxl --workflow sdxl.json "
                                   "--choose 'LoadImagePath=comfyui-hallo' --model loras/x.safetensors=hf://o/r/x.safetensors")
    p.add_argument("vid", metavar="ID", help="version id (created if it does not exist)")
    p.add_argument("--workflow", "-w", action="append", default=[], metavar="FILE", help="workflow JSON (repeatable)")
    p.add_argument("--node", action="append", default=[], metavar="SPEC",
                   help="add a node pack: <git-url>[@ref] or <registry-id>[@version] (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="FOLDER/NAME=SOURCE",
                   help="source for a model: hf://, civitai://, https://, gs:// or file:// URL (repeatable)")
    p.add_argument("--sha256", action=_AfterModel, metavar="HEX",
                   help="with --size: the sha256 of the --model just before it; pinned without a download "
                        "(marked unverified in the lock; fetch/realize check the bytes)")
    p.add_argument("--size", action=_AfterModel, type=int, metavar="BYTES", help="the size of the --model just before it")
    p.add_argument("--pip", action="append", default=[], metavar="REQ",
                   help="an extra Python requirement a pack imports without listing it, e.g. 'soundfile>=0.12' "
                        "(kept in the lock's python.extra, pyproject.toml and uv.lock; repeatable)")
    p.add_argument("--probe", metavar="PYTHON", dest="probe_python",
                   help="prove with this interpreter (one that has the version's requirements) instead of the "
                        "version's own environment, which lock otherwise makes from the draft's uv.lock "
                        "(<cache>/proof-envs/, reused while the packages are the same)")
    p.add_argument("--no-verify", action="store_true",
                   help="write the lock even if its proof fails (a class ComfyUI does not register, a model value "
                        "its loader input does not offer: each printed as a note); without --probe no proof "
                        "environment is made and the lock is not proven")
    p.add_argument("--choose", action="append", default=[], metavar="CLASS=NODE",
                   help="pick the node for an ambiguous class; recorded in the lock's `choices` (repeatable)")
    p.add_argument("--comfyui-ref", help="ComfyUI ref for a new version (default: latest)")
    p.add_argument("--comfyui-url", help=f"ComfyUI repository for a new version (default: {versions.DEFAULT_COMFYUI_URL})")
    p.add_argument("--torch", choices=["cu128", "cu126", "cu124", "cu121", "cpu", "pypi"],
                   help="torch profile (python.torch in the lock; default cu128 = PyPI's CUDA build)")
    p.add_argument("--platform", action="append", default=[], choices=["linux-x86_64", "macos-arm64"],
                   help="what the Python lock is resolved for (python.platforms; repeatable). A new version locks "
                        "Linux x86_64 only with a CUDA or CPU --torch profile, plus macOS arm64 with --torch pypi; "
                        "--platform linux-x86_64 drops macOS from an older lock (a pack needing onnxruntime-gpu)")
    p.add_argument("--no-python", action="store_true", help="skip pyproject.toml / uv.lock")
    p.add_argument("--offline-registry", action="store_true", help="do not ask the Comfy Registry about unknown classes")
    p.add_argument("--no-search", action="store_true",
                   help="do not search Hugging Face and Civitai for a model no workflow or ComfyUI-Manager entry gives "
                        "a source for (also COMFYVER_MODEL_SEARCH=0)")
    p.add_argument("--write-tests", action="store_true",
                   help="write a first test per workflow, versions/<id>/tests/<workflow>.json (it must succeed and "
                        "each core save node must write a file; an existing test is kept): `comfyver test <id>` "
                        "runs them and `deploy --test` promotes only when they pass")
    p.add_argument("--jobs", type=int, default=resolve.DEFAULT_JOBS, help="parallel resolutions")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=run)


class _AfterModel(argparse.Action):
    """--sha256 / --size: recorded for the --model given just before them."""

    def __call__(self, parser, ns, value, option_string=None):
        if not ns.model:
            parser.error(f"{option_string} {value}: give it after the --model it belongs to")
        key = ns.model[-1].partition("=")[0]
        pins = getattr(ns, "model_pins", None) or {}
        pins.setdefault(key, {})[self.dest] = value
        ns.model_pins = pins


def run(args) -> int:
    root = project.find_root()
    if not (args.workflow or args.node or args.model or args.pip) and not versions.exists(root, args.vid):
        raise UsageError(f"nothing to lock: version {args.vid!r} does not exist yet",
                         hint="give --workflow FILE (and --node / --model / --choose as needed)")
    # an existing version with nothing new: re-lock its own workflows, nodes and Python
    try:
        out = lock_version(root, args.vid, args.workflow, nodes=args.node, models=pairs(args.model, "--model"),
                           model_pins=getattr(args, "model_pins", None) or {}, pip=args.pip,
                           probe_python=args.probe_python,
                           choices=pairs(args.choose, "--choose"), comfyui_ref=args.comfyui_ref,
                           comfyui_url=args.comfyui_url, torch=args.torch, platforms=args.platform,
                           python=not args.no_python,
                           registry=not args.offline_registry, jobs=args.jobs, progress=not args.json,
                           verify=not args.no_verify, search=not args.no_search)
    except LockProblems as exc:
        if args.json:
            print(json.dumps({"version": args.vid, "ok": False, "problems": exc.problems, "notes": exc.notes,
                              "models": exc.models, "proof_seconds": exc.proof_seconds}, indent=2))
        else:
            _print_problems(args.vid, exc.problems)
            for m in exc.models:  # every model value seen, even where the lock stopped before the models step
                print(f"model {m['model']}: " + (f"from {m['url']} ({m['source']})" if m["url"] else "no source yet")
                      + ("" if m["demanded"] else " (optional)"))
            for n in exc.notes:
                print(f"note: {n}")
        return 1
    if args.write_tests:
        from comfyver.ship import versiontests

        out["tests_written"], out["tests_kept"], skipped = versiontests.write_first_tests(root, args.vid,
                                                                                          out["workflows"])
        out["notes"] += skipped
    if args.json:
        print(json.dumps({"ok": True, **out}, indent=2))
    else:
        print(f"locked version {out['version']}: {len(out['nodes'])} node(s), {len(out['models'])} model(s), "
              f"{len(out['workflows'])} workflow(s)" + (", uv.lock written" if out["uv_lock"] else "")
              + f"; node knowledge from the {'runtime probe' if out['knowledge'] == 'probe' else 'static scan'}")
        for m in out["placed"]:  # what went where, and why
            print(f"model {m['model']}: from {m['url']} ({m['source']}); used by {', '.join(m['used_by'][:3])}"
                  + (" ..." if len(m["used_by"]) > 3 else ""))
        for n in out["notes"]:
            print(f"note: {n}")
        for t in out.get("tests_written", []):
            print(f"test written: versions/{args.vid}/{t} (`comfyver test {args.vid}` runs it)")
        for t in out.get("tests_kept", []):
            print(f"test kept: versions/{args.vid}/{t} (it exists)")
    return 0


def _print_problems(vid: str, problems: list[ProblemRow]) -> None:
    from rich.table import Table

    from comfyver.base import ui

    t = Table("item", "problem", "fix", title=f"[red]version {ui.text(vid)}: cannot lock[/]", show_lines=True)
    for p in problems:  # model names, URLs and errors from workflows and servers: never markup
        t.add_row(ui.text(p["item"]), ui.text(p["problem"]), ui.text(p["fix"]))
    ui.console(stderr=True).print(t)
    print(f"error: version {vid}: {len(problems)} item(s) cannot be locked (see the table)", file=sys.stderr)
