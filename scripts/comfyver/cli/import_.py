"""`comfyver import <id> FILE`: a version from a ComfyUI-Manager snapshot or a config.yml; `comfyver import <id>
--from-install DIR`: from a ComfyUI install on this machine (lock/install.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from comfyver.base import project
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_bytes
from comfyver.base.lockfile import Lock
from comfyver.cli.args import verb
from comfyver.lock import importers, install, installpython, pipeline, probe, pylock, versions
from comfyver.sources import gitsource, modelsearch, resolve


def register(sub) -> None:
    p = verb(sub, "import", run, help="create a version from a ComfyUI-Manager snapshot, a config.yml, a comfy-build.yaml or a "
                                        "ComfyUI install",
                       description="Create a version from what you have today: a ComfyUI-Manager snapshot "
                                   "(comfyui commit, git_custom_nodes, cnr_custom_nodes; pips are compared with the "
                                   "Python lock), a config.yml (nodes with url/version, models with "
                                   "url/destination/optional), Comfy-Org's comfy-build.yaml (baseComfyVersion, "
                                   "customNodes, models, pipDependencies), or with --from-install DIR the ComfyUI folder itself "
                                   "(core and node revs, registry versions, every model hashed; nothing in DIR is "
                                   "written). Example: comfyver import prod snapshot.json; "
                                   "comfyver import pod --from-install /workspace/ComfyUI")
    p.add_argument("vid", metavar="ID", help="new version id")
    p.add_argument("file", metavar="FILE", nargs="?", help="snapshot (.json/.yaml), config.yml or comfy-build.yaml")
    p.add_argument("--from-install", metavar="DIR",
                   help="a ComfyUI folder on this machine or a mounted volume: its git rev (else comfyui_version.py), "
                        "each custom_nodes/* git checkout or registry install, every file under models/ by sha256")
    p.add_argument("--workflows", action="store_true",
                   help="with --from-install: copy the install's user/default/workflows/*.json into the version "
                        "(versions/ID/workflows/, as `lock --workflow` saves them); without it they are only listed")
    p.add_argument("--python-env", metavar="VENV",
                   help="with --from-install: the venv ComfyUI ran in (default: DIR/.venv or DIR/venv); read, never "
                        "run: torch's build picks the torch profile, the versions that ran are compared with uv.lock")
    p.add_argument("--allow-dirty", action="store_true",
                   help="with --from-install: a pack with local changes, untracked files or unpushed commits (or a "
                        "folder that is neither git nor registry) is recorded as it is on disk, by the NAR hash of an "
                        "archive kept in this machine's comfyver cache; Nix and other machines cannot fetch it")
    p.add_argument("--extra-model-paths-config", metavar="FILE", action="append", default=[],
                   help="with --from-install: a yaml ComfyUI was started with (its --extra-model-paths-config; "
                        "repeatable): its folders are read as models too, after DIR's own extra_model_paths.yaml")
    p.add_argument("--comfyui-ref", metavar="REF",
                   help="with --from-install DIR that holds no ComfyUI (a Comfy Desktop base path, e.g. "
                        "~/.config/ComfyUI: ComfyUI lives in the app): the ComfyUI release to lock, e.g. v0.3.75")
    p.add_argument("--comfyui-url", help=f"ComfyUI repository (default: {versions.DEFAULT_COMFYUI_URL}; "
                                         "with --from-install, the install's own remote)")
    p.add_argument("--probe", metavar="PYTHON", dest="probe_python",
                   help="prove the imported version as `lock --probe` does: ComfyUI's own node loading with PYTHON (an "
                        "interpreter with the version's requirements) settles each pack's classes, and the version's "
                        "workflows are checked against it; a failed proof writes nothing")
    p.add_argument("--jobs", type=int, default=resolve.DEFAULT_JOBS, help="parallel resolutions and model hashes")
    p.add_argument("--no-python", action="store_true", help="skip pyproject.toml / uv.lock")
    p.add_argument("--no-search", action="store_true",
                   help="with --from-install: do not look the models up on Hugging Face and Civitai by their sha256 "
                        "(also COMFYVER_MODEL_SEARCH=0); each is then recorded as a local file")


def run(args) -> int:
    root = project.find_root()
    with versions.writing(root, args.vid):
        return _run(root, args)


def _run(root, args) -> int:
    if versions.exists(root, args.vid):
        raise UsageError(f"version {args.vid!r} already exists", hint="pick another id, or `comfyver delete` it first")
    if (args.workflows or args.python_env or args.comfyui_ref or args.allow_dirty
            or args.extra_model_paths_config) and not args.from_install:
        raise UsageError("--workflows, --python-env, --comfyui-ref, --allow-dirty and --extra-model-paths-config read "
                         "an install: give them with --from-install DIR")
    if args.comfyui_ref is not None:
        gitsource.check_ref(args.comfyui_ref, "--comfyui-ref")
    if args.probe_python:  # refused before anything is read or hashed
        args.probe_python = probe.check_interpreter(args.probe_python)
    if (args.file is None) == (args.from_install is None):
        raise UsageError("give a snapshot or config.yml FILE, or --from-install DIR (one of them)",
                         hint="comfyver import ID snapshot.json, or comfyver import ID --from-install /workspace/ComfyUI")
    found = venv = None
    if args.from_install:
        try:
            found = install.read(args.from_install, comfyui_url=args.comfyui_url, jobs=args.jobs, progress=not args.json,
                                 copy_workflows=args.workflows, comfyui_ref=args.comfyui_ref,
                                 allow_dirty=args.allow_dirty, extra_configs=args.extra_model_paths_config)
        except install.InstallProblems as exc:
            if not args.json:
                raise
            print(json.dumps({"version": args.vid, "ok": False, "error": exc.message, "hint": exc.hint,
                              "problems": [dataclasses.asdict(p) for p in exc.problems]}, indent=2))
            return 1
        search = None if args.no_search or not modelsearch.enabled() else modelsearch.Search()
        pl = install.plan(found, args.comfyui_url or versions.DEFAULT_COMFYUI_URL, search)
        venv = _venv(found, args.python_env, pl.notes)
    else:
        pl = importers.plan(importers.read(args.file), args.file, args.comfyui_url or versions.DEFAULT_COMFYUI_URL)
    lock = importers.build(args.vid, pl, jobs=args.jobs, progress=not args.json)
    pipeline.add_extra_requirements(lock, pl.requirements)
    vdir = project.version_dir(root, args.vid)
    if venv is not None and venv.torch_profile is not None:  # what `lock --torch` sets
        lock["python"]["torch"] = venv.torch_profile
        pl.notes.append(f"python.torch: {venv.torch_profile}, the build of the venv's torch {venv.torch['torch']}")
    required = set() if args.no_python else _python_lock(lock, vdir, venv, pl.notes)
    copied: dict[str, str] = {}  # workflow file name -> workflows/<file> in the version
    if found is not None and args.workflows and found.workflows:
        named = {str(p): rel for p, rel in pipeline._workflow_names(
            pipeline.LockRequest(root, args.vid, [w.path for w in found.workflows]))}  # lock --workflow's naming
        data = {named[w.path]: install.read_workflow(w) for w in found.workflows}  # all read before one is written
        for w in found.workflows:
            if not _is_workflow(data[named[w.path]]):  # `check` would refuse the version for it
                pl.notes.append(f"left out: {w.item}: not a JSON workflow (an object)")
                continue
            copied[w.key] = named[w.path]
            atomic_write_bytes(vdir / named[w.path], data[named[w.path]])
            lock["workflows"].append(named[w.path])
    versions.save(root, args.vid, lock)
    proof: dict | None = None
    if args.probe_python:
        try:  # the lock's own steps on what was just written (its Python lock kept); this run holds the writer lock
            proof = pipeline.run(pipeline.LockRequest(root, args.vid, [], probe_python=args.probe_python, python=False,
                                                      registry=False, progress=not args.json, search=False)).to_json()
        except ComfyverError as exc:  # nothing of a version that ComfyUI refuses stays behind
            shutil.rmtree(project.version_dir(root, args.vid), ignore_errors=True)
            problems = getattr(exc, "problems", None)
            if not args.json or problems is None:
                raise
            print(json.dumps({"version": args.vid, "ok": False, "error": "the proof failed: nothing was written",
                              "problems": problems, "notes": getattr(exc, "notes", [])}, indent=2))
            return 1
        pl.notes += [n for n in proof["notes"] if n not in pl.notes]
        lock = versions.load(root, args.vid)
    if not args.no_python and pl.pips:
        pl.notes.extend(importers.pip_differences(pl, versions.python_packages(root, args.vid)))
    out = {"version": args.vid, "from": pl.kind, "nodes": sorted(lock["nodes"]), "models": sorted(lock["models"]),
           "workflows": lock["workflows"],
           "comfyui": lock["comfyui"]["locked"]["rev"], "notes": pl.notes,
           "knowledge": proof["knowledge"] if proof else "scan"}
    diffs = ([] if venv is None or args.no_python
             else installpython.differences(venv, required, versions.python_packages(root, args.vid)))
    if found is not None:
        out["install"] = {"dir": str(found.dir), "core": dataclasses.asdict(found.core),
                          "disabled": found.disabled, "hash": dataclasses.asdict(found.stats),
                          "extra_model_paths": [dataclasses.asdict(x) for x in found.extra],
                          "workflows": [{"name": w.key, "size": w.size, "copied_as": copied.get(w.key)}
                                        for w in found.workflows],
                          "python": None if venv is None else {
                              "venv": venv.path, "python": venv.python, "torch": venv.torch,
                              "torch_profile": venv.torch_profile, "packages": len(venv.packages),
                              "differences": [dataclasses.asdict(x) for x in diffs]}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"imported {pl.kind} into version {args.vid}: ComfyUI {out['comfyui'][:12]}, "
              f"{len(out['nodes'])} node(s), {len(out['models'])} model(s)")
        if found is not None:
            st = found.stats
            print(f"models: {st.files} file(s), {st.hashed} hashed ({st.bytes_hashed / 1e6:.1f} MB in {st.seconds:.1f} s), "
                  f"{st.cached} from the stat cache")
            if found.workflows:
                print(f"workflows in {install.WORKFLOWS}/: {', '.join(w.key for w in found.workflows)}"
                      + (f" (copied into versions/{args.vid}/workflows/)" if copied else " (--workflows copies them)"))
        if venv is not None:
            print(f"Python: {venv.path} ({venv.python}, {len(venv.packages)} distribution(s)); "
                  + (f"{len(diffs)} required package(s) lock at another version than the venv's:" if diffs else
                     "uv.lock has the venv's version of every required package" if not args.no_python else
                     "not compared (--no-python)"))
            for x in diffs:
                print(f"  {x.package:<32} venv {x.installed or '-':<20} uv.lock {x.locked or '-'}")
        for n in pl.notes:
            print(f"note: {n}")
    return 0


def _python_lock(lock: Lock, vdir: Path, venv: installpython.Venv | None, notes: list[str]) -> set[str]:
    """pyproject.toml and uv.lock for the imported version; with an install's venv, its versions of the required
    packages are uv constraints (python.constraints), dropped with a note when uv cannot keep them all. Returns the
    required package names."""
    what = f"version {lock['id']}"
    reqs = pylock.collect(lock)  # the requirements once; the pyproject rendered with the constraints, then without
    deps, overrides, pynotes = pylock.merge(reqs)
    notes.extend(pynotes)
    if venv is not None and (pins := installpython.constraints(venv, set(reqs.by_package))):
        lock["python"]["constraints"] = pins
        try:
            pylock.uv_lock(vdir, pylock.render(lock, deps, overrides), reqs, what)
        except ComfyverError as exc:
            del lock["python"]["constraints"]
            notes.append(f"Python: the venv's versions cannot all be kept (uv: {exc.message.splitlines()[-1][:300]}); "
                         "locked without them, the differences are listed")
        else:
            notes.append(f"Python: {len(pins)} package(s) constrained to the venv's versions (python.constraints)")
    if "constraints" not in lock["python"]:
        pylock.uv_lock(vdir, pylock.render(lock, deps, overrides), reqs, what)
    if note := pylock.settle_profile(lock, vdir):
        notes.append(note)
    return set(reqs.by_package)


def _venv(found: install.Install, given: str | None, notes: list[str]) -> installpython.Venv | None:
    """The install's venv read as evidence (None where there is none); one found by itself that is no venv is a note."""
    path = installpython.find(found.dir, given)
    if path is None:
        return None
    try:
        venv = installpython.read(path)
    except ComfyverError as exc:
        if given:
            raise
        notes.append(f"Python: not read ({exc.message})")
        return None
    if "torch" in venv.torch and venv.torch_profile is None:
        notes.append(f"python.torch: the venv's torch {venv.torch['torch']} is a build no torch profile makes "
                     "(cu128, cu126, cu124, cu121, cpu, pypi); the lock keeps its default")
    return venv


def _is_workflow(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False
