"""`comfyver lock <id> --workflow W...`: from workflows to a complete, verified lock.

Steps (nothing is written unless every step succeeds):
1. the version's lock in memory (a new one resolves ComfyUI first);
2. `--node` specs resolved and scanned, so their classes count as evidence;
3. every workflow (new and already in the version) analyzed against the locked core,
   the nodes, `choices`, overrides.json, ComfyUI-Manager's map and the Comfy Registry;
   unresolved or ambiguous classes stop here with a table of fixes;
4. the packs found are resolved and scanned (`provides`, custom model loaders);
4b. the runtime probe: the draft's Python lock (uv lock) and its own environment made or reused (lock/proofenv.py,
   or --probe's interpreter), ComfyUI's node loading there, packs that do not import fitted (lock/fit.py);
5. every model gets a source (`--model`, the workflow's `models` entries, ComfyUI-Manager's
   model list) and is resolved and hashed;
5b. with the runtime probe: the proof (lock/proof.py), every class registered and every model value among its
   loader input's options, or nothing is written (unless --no-verify);
6. workflows copied to versions/<id>/workflows/, version.json written, then
   pyproject.toml + uv.lock (the ones the environment was made from, else pylock).

Each step is one function below (`start`, `add_given_nodes`, `analyze_all`, `lock_packs`, `probe_packs`,
`place_models`, `prove`, `write`): a `LockRequest` (what was asked) and the `Draft` (the lock being built) in, the
draft grown or a `LockProblems` (a table of `Problem`s) out; `write` returns the `LockSummary`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, Reason, UsageError
from comfyver.base.fsutil import atomic_write_bytes, atomic_write_text
from comfyver.base.lockfile import (
    GitLocked,
    GitOriginal,
    Lock,
    Model,
    ModelLocked,
    ModelOriginal,
    Node,
    NodeLocked,
    Python,
    Torch,
)
from comfyver.lock import (
    analyze,
    fit,
    importers,
    installsteps,
    nodemap,
    nodesource,
    probe,
    proof,
    proofenv,
    pylock,
    submodules,
    versions,
)
from comfyver.lock.check import Problem
from comfyver.sources import gitsource, modelsearch, resolve, schemes

# model sources read from workflow content, or found by searching a name it gave (see schemes.check_untrusted)
UNTRUSTED_ORIGINS = ("workflow", *modelsearch.ORIGINS.values())
OPTIONAL_WHY = {"unconnected": "connected to nothing", "muted": "muted", "bypassed": "bypassed"}


# ---------------------------------------------------------------- the types the steps pass


class ModelPin(TypedDict, total=False):
    """--sha256/--size of a --model: both, checked by `checked_request`."""
    sha256: str
    size: int


class OptionalModel(TypedDict):
    """A model listed by a workflow, neither demanded nor locked (the summary's `optional`)."""
    model: str
    why: str
    used_by: list[str]


class SeenModel(TypedDict):
    """A model value a failed lock saw (`lock --json`'s `models`): named even when the lock stopped before models."""
    model: str
    source: str | None
    url: str | None
    demanded: bool
    used_by: list[str]


class LockProblems(ComfyverError):
    """What is missing, each with the flag or lock field that fixes it. `items`: the Problems; `problems`:
    the same as the dicts `lock --json` prints."""

    def __init__(self, vid: str, problems: list[Problem]):
        self.items = list(problems)
        self.problems = [p.to_json() for p in self.items]
        self.notes: list[str] = []  # what the steps learned before stopping (picks, fallbacks, revisions tried)
        self.models: list[SeenModel] = []  # every model value the workflows named, with the source known so far
        self.proof_seconds = 0.0
        lines = "\n".join(f"  {p.item}: {p.problem}\n    fix: {p.fix}" for p in self.items)
        super().__init__(f"version {vid}: {len(self.items)} item(s) cannot be locked:\n{lines}")


@dataclass(frozen=True)
class LockRequest:
    """What `comfyver lock` was asked (its flags), checked by `checked_request` before anything resolves."""
    root: Path
    vid: str
    workflows: Sequence[str]                      # new workflow files
    nodes: Sequence[str] = ()                     # --node specs
    models: dict[str, str] | None = None          # --model <folder>/<name> -> source
    model_pins: dict[str, ModelPin] | None = None  # <folder>/<name> -> {sha256, size} (--sha256/--size)
    choices: dict[str, str] | None = None         # --choose class -> node
    pip: Sequence[str] = ()                       # --pip requirements
    probe_python: str | None = None               # --probe interpreter
    comfyui_ref: str | None = None                # a new version's ComfyUI
    comfyui_url: str | None = None
    torch: Torch | None = None
    platforms: Sequence[str] = ()                 # --platform: python.platforms (new lock: pylock.default_platforms)
    python: bool = True                           # write pyproject.toml + uv.lock
    registry: bool = True                         # ask the Comfy Registry about unknown classes
    jobs: int = resolve.DEFAULT_JOBS
    progress: bool = True
    verify: bool = True                           # --no-verify: write even if the proof (step 5b) fails
    search: bool = True                           # --no-search: no model source search (sources/modelsearch.py)

    @property
    def vdir(self) -> Path:
        return project.version_dir(self.root, self.vid)


@dataclass
class Draft:
    """The lock being built, and what the steps learn on the way (nothing of it is written before `write`)."""
    lock: Lock
    notes: list[str] = field(default_factory=list)                   # notes of the steps ({id}: the version)
    added: dict[str, nodemap.Pack] = field(default_factory=dict)     # nodes this run locked (--node, found)
    chosen: set[str] = field(default_factory=set)                    # of those, the ones found (no user pin)
    names: list[tuple[Path, str]] = field(default_factory=list)      # new workflow -> workflows/<file>
    parsed: list[analyze.Workflow] = field(default_factory=list)     # new and already locked workflows
    mgr: nodemap.ManagerData | None = None
    probed: probe.ProbeResult | None = None                          # the runtime probe's result (4b)
    env: proofenv.ProofEnv | None = None                             # the proof environment 4b made or reused
    proof_seconds: float = 0.0                                       # spent in steps 4b and 5b
    lock_seconds: float = 0.0                                        # of that, the Python lock made early (proofenv)
    report: analyze.Report | None = None                             # the last analysis (models placed)
    added_models: list[str] = field(default_factory=list)
    held: dict[str, list[Problem]] = field(default_factory=dict)      # node -> static "does not register", for the probe
    picks: dict[str, dict[str, str]] = field(default_factory=dict)   # class -> {node, via, evidence}: how it was decided


@dataclass
class Analysis:
    """Step 3's answer: the report, its fix table, and the classes that may be frontend-only (decided in 4)."""
    report: analyze.Report
    problems: list[Problem]
    js_only: set[str]
    linked: set[str]                                                 # classes some link uses


@dataclass(frozen=True)
class Placed:
    """A model this run locked: where it went and why (the summary's `placed`)."""
    model: str
    folder: str
    source: str | None
    url: str
    used_by: list[str]


@dataclass(frozen=True)
class LockSummary:
    """What `comfyver lock` did; `to_json()` is the dict `lock --json` prints (after "ok")."""
    version: str
    nodes: list[str]
    models: list[str]
    workflows: list[str]
    added_nodes: list[str]
    added_models: list[str]
    python: Python
    uv_lock: bool
    notes: list[str]
    knowledge: str                       # "probe" | "scan": where node classes and model folders came from
    placed: list[Placed]
    picks: dict[str, dict[str, str]] = field(default_factory=dict)  # class -> {node, via, evidence} (step 3)
    optional: list[OptionalModel] = field(default_factory=list)  # listed, not demanded, not locked
    install_steps: list[installsteps.StepReport] = field(default_factory=list)  # packs' install.py etc., not run
    proof_seconds: float = 0.0  # the proof's own cost: the probe (steps 4b, ~0 when cached) and the checks (5b)

    def to_json(self) -> dict[str, Any]:  # JSON
        return dataclasses.asdict(self)


def pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k or not val:
            raise UsageError(f"{flag} {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


# ---------------------------------------------------------------- the steps


@versions.one_writer()
def lock_version(root: Path, vid: str, workflows: list[str], *, nodes: Sequence[str] = (),
                 models: dict[str, str] | None = None, model_pins: dict[str, ModelPin] | None = None,
                 choices: dict[str, str] | None = None, pip: Sequence[str] = (), probe_python: str | None = None,
                 comfyui_ref: str | None = None, comfyui_url: str | None = None, torch: Torch | None = None,
                 platforms: Sequence[str] = (), python: bool = True, registry: bool = True,
                 jobs: int = resolve.DEFAULT_JOBS, progress: bool = True, verify: bool = True,
                 search: bool = True) -> dict[str, Any]:
    """Do it all (under the version's writer lock); return the summary as `lock --json` prints it.
    Raises LockProblems with the fix table."""
    req = LockRequest(root, vid, workflows, nodes=nodes, models=models, model_pins=model_pins, choices=choices,
                      pip=pip, probe_python=probe_python, comfyui_ref=comfyui_ref, comfyui_url=comfyui_url,
                      torch=torch, platforms=platforms, python=python, registry=registry, jobs=jobs,
                      progress=progress, verify=verify, search=search)
    return run(req).to_json()


def run(req: LockRequest) -> LockSummary:
    """The steps in order; the caller holds the version's writer lock."""
    req = checked_request(req)
    draft = start(req)                    # 1
    try:
        add_given_nodes(req, draft)       # 2
        found = analyze_all(req, draft)   # 3
        lock_packs(req, draft, found)     # 4
        t = time.perf_counter()
        probe_packs(req, draft, found)    # 4b
        draft.proof_seconds = time.perf_counter() - t - draft.lock_seconds  # uv lock: needed anyway, not the proof's
        place_models(req, draft)          # 5
        t = time.perf_counter()
        prove(req, draft)                 # 5b
        draft.proof_seconds += time.perf_counter() - t
    except LockProblems as exc:
        exc.notes = [web.redact(n.replace("{id}", req.vid)) for n in dict.fromkeys(draft.notes)]
        exc.proof_seconds = round(draft.proof_seconds, 3)
        if draft.report is not None:
            exc.models = [{"model": k, "source": m.get("source"), "url": web.redact(m["url"]) if m.get("url") else None,
                           "demanded": bool(m["active"]), "used_by": m["used_by"]}
                          for k, m in sorted(draft.report.models.items())]
        raise
    return write(req, draft)              # 6


def checked_request(req: LockRequest) -> LockRequest:
    """Flags that can be refused before anything is resolved; --probe's interpreter, checked."""
    if req.probe_python:
        req = dataclasses.replace(req, probe_python=probe.check_interpreter(req.probe_python))
    for key, pin in (req.model_pins or {}).items():
        if "sha256" not in pin or "size" not in pin:
            raise UsageError(f"--model {key}: give both --sha256 and --size to pin it without a download")
    return req


def start(req: LockRequest) -> Draft:
    """1. The version's lock in memory (a new one resolves ComfyUI first), with --torch, --pip, --choose."""
    root, vid = req.root, req.vid
    if versions.exists(root, vid):
        if req.comfyui_ref or req.comfyui_url:
            raise UsageError(f"version {vid!r} exists; --comfyui-ref/--comfyui-url only apply to a new version",
                             hint=f"change its ComfyUI with `comfyver update {vid} comfyui`, or lock a new version id")
        lock = versions.load(root, vid)
    else:
        original: GitOriginal = {"type": "git", "url": req.comfyui_url or versions.DEFAULT_COMFYUI_URL,
                                 "ref": req.comfyui_ref or "latest"}
        loc = cast(GitLocked, _resolve_or_table([resolve.Item("comfyui", "git", original)], req)["comfyui"])
        lock = lockfile.empty(vid, original, loc)
    new = "platforms" not in lock["python"] and not versions.exists(root, vid)
    if req.torch:
        lock["python"]["torch"] = req.torch
    if req.platforms or new:  # CUDA profiles: Linux x86_64 only unless --platform asks for more
        lock["python"]["platforms"] = ([p for p in pylock.PLATFORMS if p in req.platforms] if req.platforms
                                       else pylock.default_platforms(lock["python"]["torch"]))
    add_extra_requirements(lock, list(req.pip))
    for c, n in (req.choices or {}).items():
        if not lockfile.NODE_NAME_RE.match(n):
            raise UsageError(f"--choose {c}={n}: {n!r} is not a node name")
        lock.setdefault("choices", {})[c] = n
    return Draft(lock)


def add_given_nodes(req: LockRequest, draft: Draft) -> None:
    """2. --node specs resolved and scanned first: their classes become evidence."""
    given: dict[str, nodemap.Pack] = {}
    for spec in req.nodes:
        p = nodemap.pack_from_spec(spec, f"--node {spec}")
        given[p.name] = p
    if given:
        _add_nodes(req, draft, given, {})
    draft.added.update(given)


def _workflow_names(req: LockRequest) -> list[tuple[Path, str]]:
    """Each new workflow file and the path it is saved under (workflows/<safe name>.json), clashes refused."""
    new_wf = [Path(w) for w in req.workflows]
    for w in new_wf:
        if not w.is_file():
            raise UsageError(f"workflow {w}: no such file")
    names: list[tuple[Path, str]] = []
    for w in new_wf:
        rel = importers.saved_workflow_name(w.name)
        if any(r == rel for _, r in names):
            raise UsageError(f"workflows {w} and {next(x for x, r in names if r == rel)} would both be saved as "
                             f"versions/{req.vid}/{rel}", hint="rename one of them")
        names.append((w, rel))
    return names


def analyze_all(req: LockRequest, draft: Draft) -> Analysis:
    """3. Every workflow (new and already in the version) analyzed against the locked core, the nodes, choices,
    overrides.json, ComfyUI-Manager's map and the Comfy Registry. Unresolved or ambiguous classes stop here,
    except an unknown class wired to nothing: it may be a frontend-only (JS) node of a pack the workflows use,
    decided in step 4 once those packs are locked (their web files are read)."""
    vdir = req.vdir
    wf_files = [vdir / w for w in draft.lock["workflows"] if (vdir / w).is_file()]
    draft.names = _workflow_names(req)
    draft.parsed = [analyze.load(w) for w, _ in draft.names] + [analyze.load(w) for w in wf_files]
    draft.mgr = nodemap.manager()
    nm, inputs = nodemap.for_lock(draft.lock, vdir, registry=req.registry, manager_data=draft.mgr)
    rep = draft.report = analyze.report(draft.parsed, nm, inputs, draft.mgr)
    draft.picks = {c: {"node": name, "via": p["via"], "evidence": why}
                   for name, p in rep.packs.items() for c, why in sorted(p.get("evidence", {}).items())}
    draft.notes += [n for n in rep.notes if n.startswith("class ") and ": picked " in n]  # every pick, with why
    probs = _problem_fix_table(rep, req.vid)
    linked = {u.class_type for wf in draft.parsed for u in wf.nodes if u.linked}
    js_only = {c for c in (p.class_name for p in probs) if c in rep.unresolved and c not in linked}
    if [p for p in probs if p.class_name not in js_only] or (js_only and not rep.packs):
        raise LockProblems(req.vid, probs)
    return Analysis(rep, probs, js_only, linked)


def lock_packs(req: LockRequest, draft: Draft, found: Analysis) -> None:
    """4. The packs found resolved and scanned (`provides`); frontend-only classes settled from their web files;
    classes asked of already locked nodes verified."""
    lock, rep = draft.lock, found.report
    attributed = {name: p["classes"] for name, p in rep.packs.items()}
    need = {name: nodemap.Pack(name, p["url"], p["registry_id"], p["version"])
            for name, p in rep.packs.items() if name not in lock["nodes"] and p["active"]}
    if need:
        saved = {n for n, p in rep.packs.items()
                 if p["version"] and (p["via"] in ("aux_id", "cnr_id") or p.get("version_from"))}
        _add_nodes(req, draft, need, attributed, saved, draft.mgr)
    draft.added.update(need)
    draft.chosen.update(need)
    if found.js_only:
        js = nodesource.frontend_only({n: lock["nodes"][n] for n in rep.packs if n in lock["nodes"]}, found.js_only)
        if set(js) != found.js_only:
            raise LockProblems(req.vid, [p for p in found.problems if p.class_name not in js])
        draft.notes += [f"class {c}: wired to nothing and named only in {n}'s web files: a frontend-only node of "
                        f"{n}, not needed to run the workflow" for c, n in sorted(js.items())]
    probs: list[Problem] = []
    for name, classes in attributed.items():  # classes an already locked node is asked for: verified too
        n = lock["nodes"].get(name)
        if n is not None and name not in need and not set(classes) <= set(n.get("provides", [])):
            provides, bad = _hold_for_probe(req, draft, name, *verified_provides(name, n["locked"], classes, draft.notes))
            probs += bad
            n["provides"] = sorted(set(n.get("provides", [])) | set(provides))
    if probs:
        raise LockProblems(req.vid, probs)


def probes(req: LockRequest) -> bool:
    """Whether step 4b runs ComfyUI's node loading: with --probe's interpreter, or in the proof environment it
    makes (the Python lock on, the proof not waived by --no-verify, COMFYVER_PROOF_ENV not 0)."""
    return bool(req.probe_python) or (req.python and req.verify and proofenv.enabled())


def proof_python(req: LockRequest, draft: Draft) -> str:
    """--probe's interpreter, or the draft's own environment (lock/proofenv.py: its uv.lock, made or reused)."""
    if req.probe_python:
        return req.probe_python
    draft.env = proofenv.make(draft.lock, req.vdir / "uv.lock", f"version {req.vid}")
    env = draft.env
    draft.lock_seconds += env.lock_seconds
    draft.notes.append(f"proven in the version's own Python environment ({'reused' if env.cached else 'made'} in "
                       f"{env.env_seconds:.1f} s, after {env.lock_seconds:.1f} s of `uv lock`: "
                       f"{web.redact(str(Path(env.python).parents[1]))})")
    return env.python


def probe_packs(req: LockRequest, draft: Draft, found: Analysis) -> None:
    """4b. The runtime probe: ComfyUI's own node loading, in the version's own environment (or --probe's
    interpreter), settles provides and model folders."""
    lock = draft.lock
    python = proof_python(req, draft) if probes(req) and lock["nodes"] else None
    draft.probed = probe.for_sources(lock, python) if python else None
    if req.probe_python and not lock["nodes"]:
        draft.notes.append("--probe: the version has no node packs; the core's classes need no probe")
    if not draft.probed or not python:
        if draft.held:  # nothing loaded to prove them: the static verdicts stand
            raise LockProblems(req.vid, [p for ps in draft.held.values() for p in ps])
        return
    python = _declare_missing(req, draft, python)
    _fit_revisions(req, draft, found, python)
    assert draft.probed is not None
    attributed = {name: p["classes"] for name, p in found.report.packs.items()}
    # a pack ComfyUI loaded: its verdict is the probe's (below); one it could not load keeps the static verdict
    loaded = {name for name, p in draft.probed["packs"].items() if p["ok"]}
    probs = [p for name, ps in draft.held.items() if name not in loaded for p in ps]
    for name, n in lock["nodes"].items():
        p = draft.probed["packs"].get(name)
        if p and p["ok"]:
            n["provides"] = sorted(p["classes"])
            for c in sorted(set(attributed.get(name, [])) - set(p["classes"])):
                if c not in found.linked:  # never wired to anything: a frontend-only node of the pack (its JS)
                    draft.notes.append(f"class {c}: {name} does not register it in Python and no link uses it: "
                                       "a frontend-only node, not needed to run the workflow")
                    continue
                probs.append(_not_registered(name, n["locked"], c, " when ComfyUI loads it (probe)"))
        elif p:
            draft.notes.append(f"node {name} fails to import against the locked ComfyUI (runtime probe): "
                               f"{(p['error'] or '')[-300:]}; " + _import_fix(p))
    if probs:
        raise LockProblems(req.vid, probs)


def _fit_revisions(req: LockRequest, draft: Draft, found: Analysis, python: str) -> None:
    """4b, first: a pack this run chose that does not import on the locked core is locked at its newest earlier
    release that does (lock/fit.py), then the version is probed again. Packs the user pinned are never moved."""
    assert draft.probed is not None
    changed = False  # candidates are probed in the draft's environment (`python`)
    for name, p in sorted(draft.probed["packs"].items()):
        if p["ok"] or name not in draft.chosen:
            continue
        info = found.report.packs.get(name, {})
        python_side = set(draft.lock["nodes"][name].get("provides", [])) | found.linked  # not frontend-only
        needed = [c for c in info.get("classes", []) if c in python_side]
        saved = info.get("version")
        got = fit.fit(draft.lock, name, needed, p["error"] or "",
                      saved if isinstance(saved, str) and gitsource.HEX40.match(saved) else None,
                      lambda lk: probe.for_sources(lk, python))
        if isinstance(got, fit.Fitted):
            node = draft.lock["nodes"][name]
            node["original"], node["locked"], node["provides"] = got.original, got.locked, got.classes
            draft.notes.append(got.note)
            changed = True
        elif got.tried:
            draft.notes.append(f"node {name}: no earlier revision fits the locked core: {'; '.join(got.tried)}")
    if changed:  # the packs moved: their requirements may have too (the environment follows, made or reused)
        draft.probed = probe.for_sources(draft.lock, proof_python(req, draft))


# a module's name -> the PyPI package that installs it, where they differ (the usual ones packs import)
PYPI_NAME = {"cv2": "opencv-python-headless", "PIL": "Pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
             "yaml": "PyYAML", "git": "GitPython", "google": "protobuf", "dateutil": "python-dateutil",
             "bs4": "beautifulsoup4", "fitz": "PyMuPDF", "attr": "attrs", "Crypto": "pycryptodome"}
# never declared for a pack: the torch family is ComfyUI's, and these are GPU builds a pack may only try for speed
NEVER_DECLARED = {"torch", "torchvision", "torchaudio", "xformers", "triton", "flash_attn", "sageattention",
                  "tensorrt", "apex", "deepspeed", "bitsandbytes", "onnxruntime", "nvidia"}


def pip_name(module: str) -> str | None:
    """The PyPI package a missing top-level module comes from, or None (private, standard library, never declared)."""
    if module.startswith("_") or module in sys.stdlib_module_names or module in NEVER_DECLARED:
        return None
    name = PYPI_NAME.get(module, module)
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) else None


def _declare_missing(req: LockRequest, draft: Draft, python: str) -> str:
    """4b, in the version's own environment only: a pack that does not import and asked for modules the environment
    lacks (its requirements do not list them: Comfyroll's matplotlib) gets their packages declared in python.extra,
    as `--pip` would, and the version is probed again in the environment made with them. Kept only for the packs
    that then import (said in a note); otherwise taken back, and the note names the `--pip` fix. A pack is as
    trusted as its requirements.txt: a module it imports names a package as its requirements would."""
    if draft.env is None or draft.probed is None:
        return python
    wants: dict[str, set[str]] = {}  # package -> the failing packs that asked for it
    declared = {canonicalize_name(Requirement(r).name) for r in draft.lock["python"].get("extra", [])}
    for name, p in sorted(draft.probed["packs"].items()):
        if not p["ok"] and name in draft.lock["nodes"]:
            for m in p.get("missing_modules", []):
                if (pkg := pip_name(m)) and canonicalize_name(pkg) not in declared:
                    wants.setdefault(pkg, set()).add(name)
    if not wants:
        return python
    before = list(draft.lock["python"].get("extra", []))

    def with_extra(pkgs: list[str]) -> tuple[str, probe.ProbeResult] | None:
        draft.lock["python"]["extra"] = before
        add_extra_requirements(draft.lock, pkgs)
        try:
            py = proof_python(req, draft)
        except ComfyverError as exc:  # uv cannot lock or install it: not a package after all
            draft.notes.append(f"declaring {', '.join(pkgs)} for the packs that import them failed: "
                               f"{str(exc).splitlines()[-1][:300]}")
            return None
        return py, probe.for_sources(draft.lock, py)

    got = with_extra(sorted(wants))
    failing: set[str] = set().union(*wants.values())
    fixed = {n for n in failing if got is not None and (r := got[1]["packs"].get(n)) is not None and r["ok"]}
    keep = sorted(pkg for pkg, packs in wants.items() if packs & fixed)
    if keep and keep != sorted(wants):
        got = with_extra(keep)
    if not keep or got is None:  # nothing helped: the lock stays as it was, its environment too
        if before:
            draft.lock["python"]["extra"] = before
        else:
            draft.lock["python"].pop("extra", None)
        return proof_python(req, draft)
    draft.probed = got[1]
    for pkg in keep:
        draft.notes.append(f"python.extra: {pkg} declared for {', '.join(sorted(wants[pkg] & fixed))}, which imports "
                           f"it without listing it in its requirements (as `--pip {pkg}` would; the version's "
                           "environment then loads it)")
    return got[0]


def _import_fix(p: probe.PackResult) -> str:
    """The fix for a pack that does not import: the modules it asked for that the environment lacks (declared with
    --pip; the pack's requirements do not list them), else another revision or core."""
    missing = [m for m in p.get("missing_modules", []) if pip_name(m)]
    if missing:
        pips = " ".join(f"--pip {pip_name(m)}" for m in missing[:5])
        return (f"it imports {', '.join(missing[:5])}, which the version's environment does not have (its "
                f"requirements do not list them): declare them ({pips}), or pin a revision that imports on this core "
                "(--node <url>@<ref>)")
    return "pin a revision that imports on this core (--node <url>@<ref>) or lock a newer core (--comfyui-ref <tag>)"


def place_models(req: LockRequest, draft: Draft) -> None:
    """5. Every model gets a source (--model, the lock, the workflow's `models` entries, ComfyUI-Manager's model
    list), analyzed again now that custom loaders are scanned, then resolved and hashed."""
    lock = draft.lock
    nm, inputs = nodemap.for_lock(lock, req.vdir, registry=False, manager_data=draft.mgr)
    if draft.probed:
        inputs.update(probe.model_inputs(draft.probed))
    search = (modelsearch.Search(skip=frozenset(lock["models"]) | frozenset(req.models or {}))
              if req.search and modelsearch.enabled() else None)
    rep = draft.report = analyze.report(draft.parsed, nm, inputs, draft.mgr, search)
    given = dict(req.models or {})
    _apply_given_models(req, draft, rep, given)
    analyze.settle_folders_from_lock(rep.models, lock["models"])
    for key, m in rep.models.items():  # a model the version already locks keeps the source it was locked from
        if key in lock["models"] and key not in given:
            o = lock["models"][key]["original"]
            m.update(url=o["url"], source="lock")
            m.pop("sha256", None), m.pop("size", None)
            if "sha256" in o:
                m["sha256"] = o["sha256"]
            if "size" in o:
                m["size"] = o["size"]
    probs = _model_problems(rep.models, req.vid)
    if probs:
        raise LockProblems(req.vid, probs)
    _lock_models(req, draft, rep, given)


def prove(req: LockRequest, draft: Draft) -> list[proof.ProofProblem]:
    """5b. With the probe's result: every workflow against what ComfyUI registers (classes) and what each loader
    input would offer from the draft's models (lock/proof.py). A problem stops the lock (all of them in one table)
    unless --no-verify, which writes it anyway and says so in a note (the lock's schema has no field for it)."""
    if not draft.probed:
        return []
    # each workflow named as the version keeps it (workflows/<file>)
    where = {str(w): rel for w, rel in draft.names} | {str(req.vdir / w): w for w in draft.lock["workflows"]}
    found = proof.prove(draft.lock, draft.parsed, proof.from_probe(draft.probed), where)
    if found and req.verify:
        raise LockProblems(req.vid, [Problem(p.item, p.problem, p.fix, workflows=[p.workflow]) for p in found])
    if found:
        draft.notes += [f"--no-verify: written although the proof failed: {p.item}: {p.problem}" for p in found]
    return found


def _apply_given_models(req: LockRequest, draft: Draft, rep: analyze.Report, given: dict[str, str]) -> None:
    """--model <folder>/<name>=<source> (and its --sha256/--size pin) onto the report's models."""
    models = rep.models
    for key, src in given.items():
        try:
            lockfile.check_model_path(key)
        except ValueError as exc:
            raise UsageError(f"--model {key}: {exc}") from None
        folder, name = key.split("/", 1)
        m = models.get(key) or models.pop(f"?/{name}", None)
        if m is None:
            draft.notes.append(f"--model {key}: no workflow of this version uses it (a typo in its folder or name?); "
                               "locked anyway")
        m = m or {"folder": folder, "name": name, "used_by": ["--model"], "active": True}
        if m.get("url") != src:
            m.pop("sha256", None)
        m.update(folder=folder, url=src, source="--model", active=True)
        if pin := (req.model_pins or {}).get(key):
            m.update(sha256=pin["sha256"].lower(), size=pin["size"])
        models[key] = m


def _lock_models(req: LockRequest, draft: Draft, rep: analyze.Report, given: dict[str, str]) -> None:
    """The models whose source is new or changed, resolved and written into the draft's lock."""
    lock = draft.lock
    items: list[resolve.Item] = []
    originals: dict[str, tuple[ModelOriginal, bool]] = {}
    for key, m in rep.models.items():
        if not m["active"] and key not in given:
            continue
        original = resolve.parse_model_source(m["url"], m.get("sha256"), m.get("size"))
        if key in lock["models"] and lock["models"][key]["original"] == original:
            continue
        untrusted = m.get("source") in UNTRUSTED_ORIGINS
        originals[key] = original, untrusted
        items.append(resolve.Item(f"models.{key}", "model", original, untrusted=untrusted))
    locked = _resolve_or_table(items, req)
    for key, (original, untrusted) in originals.items():
        # a source from a workflow stays untrusted for every later fetch (realize, update, recheck, models sync)
        model: Model = {"original": original, "locked": cast(ModelLocked, locked[f"models.{key}"])}
        if untrusted:
            model["from"] = "workflow"
        lock["models"][key] = model
    lock["models"] = dict(sorted(lock["models"].items()))
    draft.added_models = sorted(originals)


def write(req: LockRequest, draft: Draft) -> LockSummary:
    """6. Workflows listed, the lock validated, pyproject.toml + uv.lock (pylock), the workflows copied,
    version.json written."""
    root, vid, vdir, lock, rep = req.root, req.vid, req.vdir, draft.lock, draft.report
    assert rep is not None, "place_models (step 5) runs before write"
    for _, rel in draft.names:
        if rel not in lock["workflows"]:
            lock["workflows"].append(rel)
    lockfile.validate(lock, str(project.lock_path(root, vid)))
    notes = [web.redact(n) for n in dict.fromkeys(list(rep.notes) + [n.replace("{id}", vid) for n in draft.notes])]
    probed = bool(draft.probed) or ((vdir / "uv.lock").is_file()
                                    and probe.cached(lock, (vdir / "uv.lock").read_bytes()) is not None)
    if lock["nodes"] and not probed:
        why = ("--no-python" if not req.python else "--no-verify" if not req.verify
               else f"{proofenv.ENV_VAR}=0")
        notes.append(f"not proven ({why}: no proof environment): node classes and model folders come from the static "
                     f"scan of the pinned sources; `comfyver realize {vid} && comfyver probe {vid}` checks them in "
                     "ComfyUI itself")
    proven_env = True  # the uv.lock written is the one the probe's environment was made from (or --probe's)
    if req.python:
        pyproject, reqs, pynotes = pylock.generate(lock)
        notes += pynotes
        env = draft.env
        proven_env = env is None or env.source == pyproject
        if env is not None and proven_env:  # exactly what the lock was proven with
            vdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(vdir / "uv.lock", env.uv_lock)
            atomic_write_text(vdir / "pyproject.toml", env.pyproject)
        else:
            pylock.uv_lock(vdir, pyproject, reqs, f"version {vid}")
        if note := pylock.settle_profile(lock, vdir):
            notes.append(note)
    for w, rel in draft.names:
        atomic_write_bytes(vdir / rel, w.read_bytes())
    versions.save(root, vid, lock)
    if draft.probed and proven_env:  # `check` reuses the proof this lock was written with
        ul = vdir / "uv.lock"
        probe.record_lock_probe(lock, ul.read_bytes() if ul.is_file() else b"", draft.probed)
    optional: list[OptionalModel] = [{"model": k, "why": m.get("optional") or "inactive", "used_by": m["used_by"]}
                                     for k, m in sorted(rep.models.items()) if not m["active"] and k not in lock["models"]]
    notes += [web.redact(f"model {o['model']}: optional (its node is {OPTIONAL_WHY.get(o['why'], o['why'])}): "
                         "listed, not locked") for o in optional]
    placed = [Placed(k, m["folder"], m.get("source"), web.redact(m["url"]), m["used_by"])
              for k, m in sorted(rep.models.items()) if k in draft.added_models]
    steps, step_notes = installsteps.for_lock(lock)  # what each pack's install.py would do; comfyver never runs it
    notes += step_notes
    return LockSummary(vid, sorted(lock["nodes"]), sorted(lock["models"]), lock["workflows"], sorted(draft.added),
                       draft.added_models, lock["python"], bool(req.python), notes, "probe" if probed else "scan",
                       placed, dict(sorted(draft.picks.items())), optional, install_steps=steps,
                       proof_seconds=round(draft.proof_seconds, 3))


# ---------------------------------------------------------------- the steps' parts


def _problem_fix_table(rep: analyze.Report, vid: str) -> list[Problem]:
    probs = []
    for c, e in rep.unresolved.items():
        if not e["active"]:
            continue
        if "locked core" in e["why"]:
            fix = (f"a newer ComfyUI: `comfyver update {vid} comfyui` if its ref is latest or a branch, "
                   "else lock a new version with --comfyui-ref <tag>")
        else:
            fix = (f"--node <git-url>[@ref] for the pack that provides it, or versions/{vid}/overrides.json "
                   f"{{\"classes\": {{{json.dumps(c)}: \"<git-url or registry-id>\"}}}}")
        probs.append(Problem(f"class {c}", e["why"], fix, workflows=e["workflows"]))
    for c, e in rep.ambiguous.items():
        if e["active"]:
            names = [x.split(" ")[0] for x in e["candidates"]]  # no evidence decided: none of them is proposed
            probs.append(Problem(f"class {c}", f"{e['why']}: {', '.join(e['candidates'])}",
                                 f"--choose '{c}=<node>' (one of: {', '.join(names)}); recorded in the lock's choices",
                                 workflows=e["workflows"]))
    return probs


def _model_problems(models: dict[str, dict[str, Any]], vid: str) -> list[Problem]:  # analyze.Report.models
    probs = []
    for key, m in models.items():
        if not m["active"]:
            continue
        try:
            if m["folder"] is not None:
                lockfile.check_model_path(key)
            if m.get("url"):
                lockfile.check_url_has_no_secret(m["url"])
                if m.get("source") in UNTRUSTED_ORIGINS:
                    schemes.check_untrusted(m["url"])
        except ValueError as exc:
            probs.append(Problem(f"model {key}", str(exc),
                                 "fix the name or URL in the workflow, or give a clean source with --model",
                                 used_by=m["used_by"], used_by_first=True))
            continue
        if m["folder"] is None:
            probs.append(Problem(f"model {m['name']}", "no folder known (a custom loader or an unknown input)",
                                 f"--model <folder>/{m['name']}=<url>", used_by=m["used_by"]))
        elif "url" not in m and m.get("candidates"):
            probs.append(Problem(f"model {key}", "ComfyUI-Manager's model list has several files of this "
                                 f"name for {m['folder']}: " + "; ".join(m["candidates"]),
                                 f"--model '{key}=<one of those URLs>'", used_by=m["used_by"]))
        elif "url" not in m and m.get("search"):  # several files found by search (sources/modelsearch.py)
            probs.append(Problem(f"model {key}", m["search"]["problem"], m["search"]["fix"], used_by=m["used_by"]))
        elif "url" not in m:
            probs.append(Problem(f"model {key}", "no download source in the workflow or ComfyUI-Manager's model list",
                                 f"--model '{key}=<hf://|civitai://|https://...>' (lock field "
                                 f"models[{json.dumps(key)}].original.url)", used_by=m["used_by"]))
    return probs


def _failure_table(vid: str, failures: dict[str, str]) -> LockProblems:
    fixes = {"node": "pin another ref: --node <url>@<ref>, or choose another pack",
             "model": "give another source: --model <folder>/<name>=<url> (and a token if it is gated)"}
    return LockProblems(vid, [Problem(k, v, fixes["model" if k.startswith("models.") else "node"])
                              for k, v in sorted(failures.items())])


def _resolve_or_table(items: list[resolve.Item], req: LockRequest) -> dict[str, resolve.Locked]:
    try:
        return resolve.lock_items(items, jobs=req.jobs, progress=req.progress)
    except resolve.ResolveFailed as exc:
        raise _failure_table(req.vid, exc.failures) from None


def _not_registered(name: str, loc: NodeLocked, c: str, how: str = "") -> Problem:
    """The problem for class `c`, asked of node `name` whose pinned tree does not register it."""
    at = loc["rev"] if loc["type"] == "git" else loc["hash"]
    return Problem(f"class {c}", f"node {name} at {at} does not register {c!r}{how}",
                   f"pin a ref of {name} that has it (--node <url>@<ref>), or choose another pack "
                   f"(--choose '{c}=<node>' / overrides.json)")


def verified_provides(name: str, loc: NodeLocked, wanted: list[str], notes: list[str]) -> tuple[list[str], list[Problem]]:
    """A node's `provides`: the classes its pinned tree registers (scanned). A class the evidence asked for
    that the tree does not register is a problem; where the scan met a registration it cannot follow, it is
    kept with a note (the runtime probe settles it)."""
    found = nodesource.scan_locked_node_full(name, loc)
    provides, probs = set(found.classes), list[Problem]()
    for c in sorted(set(wanted) - provides):
        if found.unfollowed:
            provides.add(c)
            notes.append(f"node {name}: class {c!r} could not be verified statically (the pack registers classes "
                         f"at {found.unfollowed[0].split(': ')[0]} in a way the scan cannot follow); "
                         f"`comfyver probe {{id}}` checks it in the version's environment")
        else:
            probs.append(_not_registered(name, loc, c))
    return sorted(provides), probs


def _hold_for_probe(req: LockRequest, draft: Draft, name: str, provides: list[str],
                    bad: list[Problem]) -> tuple[list[str], list[Problem]]:
    """When the lock probes, a class the static scan says a pack does not register is kept for ComfyUI's own loading to
    decide (step 4b): held, not raised; the class stays in `provides` until the probe answers."""
    if not bad or not probes(req):
        return provides, bad
    draft.held.setdefault(name, []).extend(bad)
    draft.notes += [f"node {name}: class {p.class_name!r} not found by the static scan; the runtime probe decides"
                    for p in bad]
    return sorted(set(provides) | {c for p in bad if (c := p.class_name)}), []


def _release_tag(url: str, version: str, name: str) -> str | None:
    """The repository's tag for registry version `version` (`v1.2.0` or `1.2.0`), if it has one."""
    try:
        refs, _ = gitsource.ls_remote(url, f"node {name}")
    except ComfyverError:
        return None
    return next((t for t in (f"v{version}", version) if f"refs/tags/{t}" in refs), None)


def _fallbacks(packs: dict[str, nodemap.Pack], failed: resolve.ResolveFailed, saved: Set[str],
               mgr: nodemap.ManagerData | None) -> dict[str, tuple[nodemap.Pack, str]]:
    """Second choices for packs that failed to resolve: a version the workflow saved that the repository no
    longer has (Reason.NOT_FOUND) -> its newest; the Comfy Registry unreachable (or without that version) -> the
    pack's git repository from ComfyUI-Manager's list. Never for versions the user gave."""
    out = {}
    for key, why in failed.failures.items():
        name = key.removeprefix("nodes.")
        p = packs.get(name)
        if p is None:
            continue
        gone = failed.reasons.get(key) is Reason.NOT_FOUND
        if p.url and p.version and name in saved and gone:
            out[name] = (nodemap.Pack(p.name, p.url), f"node {name}: the workflow saved it at {p.version}, which "
                         f"{p.url} does not have; locked its newest instead (pin with --node {p.url}@<ref>)")
        elif not p.url and p.registry_id and mgr is not None and (url := mgr.url_for_id(p.registry_id)):
            reason = why if len(why) <= 160 else why[:157].rsplit(" ", 1)[0] + "..."
            tag = _release_tag(url, p.version, name) if p.version and p.version != "latest" else None
            out[name] = (nodemap.Pack(p.name, url, version=tag), f"node {name}: the Comfy Registry could not give "
                         f"{p.registry_id}@{p.version or 'latest'} ({reason}); locked its git repository {url} "
                         + (f"at tag {tag}" if tag else "(newest)") + " instead, from ComfyUI-Manager's list")
    return out


def _add_nodes(req: LockRequest, draft: Draft, packs: dict[str, nodemap.Pack], attributed: dict[str, list[str]],
               saved: Set[str] = frozenset(), mgr: nodemap.ManagerData | None = None) -> None:
    """Resolve `packs` (a failed one takes its fallback where it has one), verify what each provides, and put
    them into the draft's lock."""
    lock, vid = draft.lock, req.vid

    def item(name: str, pack: nodemap.Pack) -> resolve.Item:
        return resolve.Item(f"nodes.{name}", resolve.kind_of(pack.original()), pack.original())

    try:
        locked = resolve.lock_items([item(n, p) for n, p in packs.items()], jobs=req.jobs, progress=req.progress)
    except resolve.ResolveFailed as exc:
        second = _fallbacks(packs, exc, saved, mgr)
        if set(second) != {k.removeprefix("nodes.") for k in exc.failures}:
            raise _failure_table(vid, exc.failures) from None  # some have no other source
        packs = {**packs, **{n: p for n, (p, _) in second.items()}}
        draft.notes += [why for _, why in second.values()]
        # only the fallbacks are resolved again; the rest keep their first results
        locked = {**exc.results, **_resolve_or_table([item(n, p) for n, (p, _) in second.items()], req)}
    git = {n: (cast(GitOriginal, p.original()), cast(GitLocked, locked[f"nodes.{n}"])) for n, p in packs.items()
           if cast(NodeLocked, locked[f"nodes.{n}"])["type"] == "git"}
    recursive, sub_notes = submodules.with_submodules(git, jobs=req.jobs)  # as ComfyUI-Manager installs packs
    locked.update({f"nodes.{n}": loc for n, loc in recursive.items()})
    draft.notes += sub_notes
    probs: list[Problem] = []
    for name, p in packs.items():
        loc = cast(NodeLocked, locked[f"nodes.{name}"])
        provides, bad = _hold_for_probe(req, draft, name, *verified_provides(name, loc, attributed.get(name, []),
                                                                             draft.notes))
        probs += bad
        entry: Node = {"original": p.original(), "locked": loc}
        if name in lock["nodes"]:
            entry = {**lock["nodes"][name], **entry}
        if provides:
            entry["provides"] = provides
        lock["nodes"][name] = entry
    if probs:
        raise LockProblems(vid, probs)
    lock["nodes"] = dict(sorted(lock["nodes"].items()))


def add_extra_requirements(lock: Lock, specs: list[str]) -> None:
    """`--pip REQ`: requirements a pack imports without listing them, kept in the lock's python.extra (one per
    package; a later one replaces an earlier one)."""
    extra = {canonicalize_name(Requirement(r).name): r for r in lock["python"].get("extra", [])}
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise UsageError(f"--pip {spec!r}: not a requirement ({exc})", hint="e.g. --pip 'soundfile>=0.12'") from None
        if req.url:
            raise UsageError(f"--pip {spec!r}: a URL requirement cannot be pinned by uv.lock here; name a package")
        extra[canonicalize_name(req.name)] = str(req)
    if extra:
        lock["python"]["extra"] = sorted(extra.values())


def analyze_workflows(paths: Iterable[str | Path], vid: str | None = None, comfyui: str | Path | None = None,
                      registry: bool = True) -> analyze.Report:
    """`comfyver analyze`: the report for workflow files, against a locked version, a local ComfyUI or nothing."""
    wfs = [analyze.load(w) for w in paths]
    mgr = nodemap.manager()
    if vid:
        root = project.find_root()
        lock = lockfile.read(project.lock_path(root, vid))
        nm, inputs = nodemap.for_lock(lock, project.version_dir(root, vid), registry=registry, manager_data=mgr)
    elif comfyui:
        inputs = nodesource.scan_tree(comfyui, core=True)
        nm = nodemap.NodeMap(core_classes=inputs, manager_data=mgr, registry=registry)
    else:
        rev, core = nodesource.newest_cached_core()
        nm, inputs = nodemap.NodeMap(core_classes=core, manager_data=mgr, registry=registry), core or {}
        rep = analyze.report(wfs, nm, inputs, mgr)
        rep.notes.append(f"core classes from the newest cached ComfyUI scan ({rev[:12]}); --version ID or --comfyui DIR "
                         "checks against a specific core" if rev else "no ComfyUI core scan is cached: core classes "
                         "come from the workflow's cnr_id and ComfyUI-Manager; --version ID or --comfyui DIR scans one")
        return rep
    return analyze.report(wfs, nm, inputs, mgr)
