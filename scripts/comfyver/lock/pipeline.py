"""`comfyver lock <id> --workflow W...`: from workflows to a complete, verified lock.

Steps (nothing is written unless every step succeeds):
1. the version's lock in memory (a new one resolves ComfyUI first);
2. `--node` specs resolved and scanned, so their classes count as evidence;
3. every workflow (new and already in the version) analyzed against the locked core,
   the nodes, `choices`, overrides.json, ComfyUI-Manager's map and the Comfy Registry;
   unresolved or ambiguous classes stop here with a table of fixes;
4. the packs found are resolved and scanned (`provides`, custom model loaders);
5. every model gets a source (`--model`, the workflow's `models` entries, ComfyUI-Manager's
   model list) and is resolved and hashed;
6. workflows copied to versions/<id>/workflows/, version.json written, then
   pyproject.toml + uv.lock (pylock).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_bytes
from comfyver.lock import analyze, nodemap, nodesource, probe, pylock, versions
from comfyver.sources import gitsource, resolve, schemes

UNTRUSTED_ORIGINS = ("workflow",)  # model sources read from workflow content (see web.check_untrusted_source)


class LockProblems(ComfyverError):
    """What is missing, each with the flag or lock field that fixes it."""

    def __init__(self, vid: str, problems: list[dict]):
        self.problems = problems
        lines = "\n".join(f"  {p['item']}: {p['problem']}\n    fix: {p['fix']}" for p in problems)
        super().__init__(f"version {vid}: {len(problems)} item(s) cannot be locked:\n{lines}")


def pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k or not val:
            raise UsageError(f"{flag} {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


def _problem_fix_table(rep: analyze.Report, vid: str) -> list[dict]:
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
        probs.append({"item": f"class {c}", "problem": e["why"], "fix": fix, "workflows": e["workflows"]})
    for c, e in rep.ambiguous.items():
        if e["active"]:
            names = [x.split(" ")[0] for x in e["candidates"]]
            probs.append({"item": f"class {c}", "problem": f"{e['why']}: {', '.join(e['candidates'])}",
                          "fix": f"--choose '{c}={names[0]}' (one of: {', '.join(names)}); recorded in the lock's choices",
                          "workflows": e["workflows"]})
    return probs


def _model_problems(models: dict, vid: str) -> list[dict]:
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
            probs.append({"item": f"model {key}", "problem": str(exc), "used_by": m["used_by"],
                          "fix": "fix the name or URL in the workflow, or give a clean source with --model"})
            continue
        if m["folder"] is None:
            probs.append({"item": f"model {m['name']}", "problem": "no folder known (a custom loader or an unknown input)",
                          "fix": f"--model <folder>/{m['name']}=<url>", "used_by": m["used_by"]})
        elif "url" not in m and m.get("candidates"):
            probs.append({"item": f"model {key}", "problem": "ComfyUI-Manager's model list has several files of this "
                          f"name for {m['folder']}: " + "; ".join(m["candidates"]),
                          "fix": f"--model '{key}=<one of those URLs>'", "used_by": m["used_by"]})
        elif "url" not in m:
            probs.append({"item": f"model {key}", "problem": "no download source in the workflow or ComfyUI-Manager's model list",
                          "fix": f"--model '{key}=<hf://|civitai://|https://...>' (lock field models[{json.dumps(key)}].original.url)",
                          "used_by": m["used_by"]})
    return probs


def _failure_table(vid: str, failures: dict[str, str]) -> LockProblems:
    fixes = {"node": "pin another ref: --node <url>@<ref>, or choose another pack",
             "model": "give another source: --model <folder>/<name>=<url> (and a token if it is gated)"}
    return LockProblems(vid, [{"item": k, "problem": v, "fix": fixes["model" if k.startswith("models.") else "node"]}
                              for k, v in sorted(failures.items())])


def _resolve_or_table(items: list, vid: str, jobs: int, progress: bool) -> dict:
    try:
        return resolve.lock_items(items, jobs=jobs, progress=progress)
    except resolve.ResolveFailed as exc:
        raise _failure_table(vid, exc.failures) from None


def _not_registered(name: str, loc: dict, c: str, how: str = "") -> dict:
    """The problem row for class `c`, asked of node `name` whose pinned tree does not register it."""
    at = loc.get("rev") or loc.get("hash")
    return {"item": f"class {c}", "problem": f"node {name} at {at} does not register {c!r}{how}",
            "fix": f"pin a ref of {name} that has it (--node <url>@<ref>), or choose another pack "
                   f"(--choose '{c}=<node>' / overrides.json)"}


def _class_of(problem: dict) -> str | None:
    """The class a problem row is about (its item is "class <name>"), else None."""
    return problem["item"].removeprefix("class ") if problem["item"].startswith("class ") else None


def verified_provides(name: str, loc: dict, wanted: list[str], notes: list[str]) -> tuple[list[str], list[dict]]:
    """A node's `provides`: the classes its pinned tree registers (scanned). A class the evidence asked for
    that the tree does not register is a problem; where the scan met a registration it cannot follow, it is
    kept with a note (the runtime probe settles it)."""
    found = nodesource.scan_locked_node_full(name, loc)
    provides, probs = set(found.classes), []
    for c in sorted(set(wanted) - provides):
        if found.unfollowed:
            provides.add(c)
            notes.append(f"node {name}: class {c!r} could not be verified statically (the pack registers classes "
                         f"at {found.unfollowed[0].split(': ')[0]} in a way the scan cannot follow); "
                         f"`comfyver probe {{id}}` checks it in the version's environment")
        else:
            probs.append(_not_registered(name, loc, c))
    return sorted(provides), probs


def _release_tag(url: str, version: str, name: str) -> str | None:
    """The repository's tag for registry version `version` (`v1.2.0` or `1.2.0`), if it has one."""
    try:
        refs, _ = gitsource.ls_remote(url, f"node {name}")
    except ComfyverError:
        return None
    return next((t for t in (f"v{version}", version) if f"refs/tags/{t}" in refs), None)


def _fallbacks(packs: dict[str, nodemap.Pack], failures: dict[str, str], saved: set[str],
               mgr: nodemap.ManagerData | None) -> dict[str, tuple[nodemap.Pack, str]]:
    """Second choices for packs that failed to resolve: a version the workflow saved that the repository no
    longer has -> its newest; the Comfy Registry unreachable (or without that version) -> the pack's git
    repository from ComfyUI-Manager's list. Never for versions the user gave."""
    out = {}
    for key, why in failures.items():
        name = key.removeprefix("nodes.")
        p = packs.get(name)
        if p is None:
            continue
        gone = re.search(r"no longer reachable|not found|couldn't find remote ref|unknown revision|no such ref", why, re.I)
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


def _add_nodes(lock: dict, packs: dict[str, nodemap.Pack], attributed: dict[str, list[str]], vid: str,
               jobs: int, progress: bool, notes: list[str], saved: set[str] = frozenset(),
               mgr: nodemap.ManagerData | None = None) -> None:
    def item(name: str, pack: nodemap.Pack) -> resolve.Item:
        return resolve.Item(f"nodes.{name}", resolve.kind_of(pack.original()), pack.original())

    try:
        locked = resolve.lock_items([item(n, p) for n, p in packs.items()], jobs=jobs, progress=progress)
    except resolve.ResolveFailed as exc:
        second = _fallbacks(packs, exc.failures, saved, mgr)
        if set(second) != {k.removeprefix("nodes.") for k in exc.failures}:
            raise _failure_table(vid, exc.failures) from None  # some have no other source
        packs = {**packs, **{n: p for n, (p, _) in second.items()}}
        notes += [why for _, why in second.values()]
        # only the fallbacks are resolved again; the rest keep their first results
        locked = {**exc.results, **_resolve_or_table([item(n, p) for n, (p, _) in second.items()], vid, jobs,
                                                     progress)}
    probs = []
    for name, p in packs.items():
        loc = locked[f"nodes.{name}"]
        provides, bad = verified_provides(name, loc, attributed.get(name, []), notes)
        probs += bad
        entry = {**lock["nodes"].get(name, {}), "original": p.original(), "locked": loc}
        if provides:
            entry["provides"] = provides
        lock["nodes"][name] = entry
    if probs:
        raise LockProblems(vid, probs)
    lock["nodes"] = dict(sorted(lock["nodes"].items()))


def add_extra_requirements(lock: dict, specs: list[str]) -> None:
    """`--pip REQ`: requirements a pack imports without listing them, kept in the lock's python.extra (one per
    package; a later one replaces an earlier one)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

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


@versions.one_writer()
def lock_version(root: Path, vid: str, workflows: list[str], *, nodes=(), models=None, model_pins=None, choices=None,
                 pip=(), probe_python: str | None = None,
                 comfyui_ref=None, comfyui_url=None, torch=None, python=True,
                 registry=True, jobs=resolve.DEFAULT_JOBS, progress=True) -> dict:
    """Do it all; return a summary. Raises LockProblems with the fix table."""
    vdir = project.version_dir(root, vid)
    if probe_python:
        probe_python = probe.check_interpreter(probe_python)
    for key, pin in (model_pins or {}).items():
        if "sha256" not in pin or "size" not in pin:
            raise UsageError(f"--model {key}: give both --sha256 and --size to pin it without a download")
    if versions.exists(root, vid):
        if comfyui_ref or comfyui_url:
            raise UsageError(f"version {vid!r} exists; --comfyui-ref/--comfyui-url only apply to a new version",
                             hint=f"change its ComfyUI with `comfyver update {vid} comfyui`, or lock a new version id")
        lock = versions.load(root, vid)
    else:
        original = {"type": "git", "url": comfyui_url or versions.DEFAULT_COMFYUI_URL, "ref": comfyui_ref or "latest"}
        loc = _resolve_or_table([resolve.Item("comfyui", "git", original)], vid, jobs, progress)["comfyui"]
        lock = lockfile.empty(vid, original, loc)
    if torch:
        lock["python"]["torch"] = torch
    add_extra_requirements(lock, list(pip))
    for c, n in (choices or {}).items():
        if not lockfile.NODE_NAME_RE.match(n):
            raise UsageError(f"--choose {c}={n}: {n!r} is not a node name")
        lock.setdefault("choices", {})[c] = n
    # 2. explicit nodes first: their classes become evidence
    explicit = {}
    for spec in nodes:
        p = nodemap.pack_from_spec(spec, f"--node {spec}")
        explicit[p.name] = p
    early_notes: list[str] = []
    if explicit:
        _add_nodes(lock, explicit, {}, vid, jobs, progress, early_notes)
    # 3. analysis
    wf_files = [vdir / w for w in lock["workflows"] if (vdir / w).is_file()]
    new_wf = [Path(w) for w in workflows]
    for w in new_wf:
        if not w.is_file():
            raise UsageError(f"workflow {w}: no such file")
    names = []
    for w in new_wf:
        base = re.sub(r"[^A-Za-z0-9._-]", "-", w.name)
        base = base if base.endswith(".json") else base + ".json"
        rel = f"workflows/{base}"
        if any(r == rel for _, r in names):
            raise UsageError(f"workflows {w} and {next(x for x, r in names if r == rel)} would both be saved as "
                             f"versions/{vid}/{rel}", hint="rename one of them")
        names.append((w, rel))
    parsed = [analyze.load(w) for w in new_wf + wf_files]
    mgr = nodemap.manager()
    nm, inputs = nodemap.for_lock(lock, vdir, registry=registry, manager_data=mgr)
    rep = analyze.report(parsed, nm, inputs, mgr)
    probs = _problem_fix_table(rep, vid)
    linked = {u.class_type for wf in parsed for u in wf.nodes if u.linked}
    # an unknown class wired to nothing may be a frontend-only (JS) node of a pack the workflows use: decided
    # after those packs are locked (their web files are read); anything else stops here
    js_only = {c for c in map(_class_of, probs) if c in rep.unresolved and c not in linked}
    if [p for p in probs if _class_of(p) not in js_only] or (js_only and not rep.packs):
        raise LockProblems(vid, probs)
    # 4. packs
    need = {}
    attributed = {}
    for name, p in rep.packs.items():
        attributed[name] = p["classes"]
        if name not in lock["nodes"] and p["active"]:
            need[name] = nodemap.Pack(name, p["url"], p["registry_id"], p["version"])
    if need:
        saved = {n for n, p in rep.packs.items()
                 if p["version"] and (p["via"] in ("aux_id", "cnr_id") or p.get("version_from"))}
        _add_nodes(lock, need, attributed, vid, jobs, progress, early_notes, saved, mgr)
    if js_only:
        found = nodesource.frontend_only({n: lock["nodes"][n] for n in rep.packs if n in lock["nodes"]}, js_only)
        if set(found) != js_only:
            raise LockProblems(vid, [p for p in probs if _class_of(p) not in found])
        early_notes += [f"class {c}: wired to nothing and named only in {n}'s web files: a frontend-only node of "
                        f"{n}, not needed to run the workflow" for c, n in sorted(found.items())]
    probs = []
    for name, classes in attributed.items():  # classes an already locked node is asked for: verified too
        n = lock["nodes"].get(name)
        if n is not None and name not in need and not set(classes) <= set(n.get("provides", [])):
            provides, bad = verified_provides(name, n["locked"], classes, early_notes)
            probs += bad
            n["provides"] = sorted(set(n.get("provides", [])) | set(provides))
    if probs:
        raise LockProblems(vid, probs)
    # 4b. the runtime probe, when asked for: ComfyUI's own node loading settles provides and model folders
    probed = probe.for_sources(lock, probe_python) if probe_python and lock["nodes"] else None
    if probe_python and not lock["nodes"]:
        early_notes.append("--probe: the version has no node packs; the core's classes need no probe")
    if probed:
        probs = []
        for name, n in lock["nodes"].items():
            p = probed["packs"].get(name)
            if p and p["ok"]:
                n["provides"] = sorted(p["classes"])
                for c in sorted(set(attributed.get(name, [])) - set(p["classes"])):
                    if c not in linked:  # never wired to anything: a frontend-only node of the pack (its JS)
                        early_notes.append(f"class {c}: {name} does not register it in Python and no link uses it: "
                                           "a frontend-only node, not needed to run the workflow")
                        continue
                    probs.append(_not_registered(name, n["locked"], c, " when ComfyUI loads it (probe)"))
            elif p:
                early_notes.append(f"node {name} fails to import against the locked ComfyUI (runtime probe): "
                                   f"{p['error'][-300:]}")
        if probs:
            raise LockProblems(vid, probs)
    # 5. models (again, now that custom loaders are scanned)
    nm, inputs = nodemap.for_lock(lock, vdir, registry=False, manager_data=mgr)
    if probed:
        inputs.update(probe.model_inputs(probed))
    rep = analyze.report(parsed, nm, inputs, mgr)
    given = dict(models or {})
    for key, src in given.items():
        try:
            lockfile.check_model_path(key)
        except ValueError as exc:
            raise UsageError(f"--model {key}: {exc}") from None
        folder, name = key.split("/", 1)
        m = rep.models.get(key) or rep.models.pop(f"?/{name}", None)
        if m is None:
            early_notes.append(f"--model {key}: no workflow of this version uses it (a typo in its folder or name?); "
                               "locked anyway")
        m = m or {"folder": folder, "name": name, "used_by": ["--model"], "active": True}
        if m.get("url") != src:
            m.pop("sha256", None)
        m.update(folder=folder, url=src, source="--model", active=True)
        if pin := (model_pins or {}).get(key):
            m.update(sha256=pin["sha256"].lower(), size=pin["size"])
        rep.models[key] = m
    analyze.settle_folders_from_lock(rep.models, lock["models"])
    for key, m in rep.models.items():  # a model the version already locks keeps the source it was locked from
        if key in lock["models"] and key not in given:
            o = lock["models"][key]["original"]
            m.update(url=o["url"], source="lock")
            m.pop("sha256", None), m.pop("size", None)
            m.update({k: o[k] for k in ("sha256", "size") if k in o})
    probs = _model_problems(rep.models, vid)
    if probs:
        raise LockProblems(vid, probs)
    items, originals = [], {}
    for key, m in rep.models.items():
        if not m["active"] and key not in given:
            continue
        original = resolve.parse_model_source(m["url"], m.get("sha256"), m.get("size"))
        if key in lock["models"] and lock["models"][key]["original"] == original:
            continue
        untrusted = m.get("source") in UNTRUSTED_ORIGINS
        originals[key] = original, untrusted
        items.append(resolve.Item(f"models.{key}", "model", original, untrusted=untrusted))
    locked = _resolve_or_table(items, vid, jobs, progress)
    for key, (original, untrusted) in originals.items():
        # a source from a workflow stays untrusted for every later fetch (realize, update, recheck, models sync)
        lock["models"][key] = {"original": original, "locked": locked[f"models.{key}"],
                               **({"from": "workflow"} if untrusted else {})}
    lock["models"] = dict(sorted(lock["models"].items()))
    # 6. write: workflows, lock, python lock
    for w, rel in names:
        if rel not in lock["workflows"]:
            lock["workflows"].append(rel)
    lockfile.validate(lock, str(project.lock_path(root, vid)))
    notes = [web.redact(n) for n in list(rep.notes) + [n.replace("{id}", vid) for n in early_notes]]
    probed = bool(probed) or ((vdir / "uv.lock").is_file() and probe.cached(lock, (vdir / "uv.lock").read_bytes())
                              is not None)
    knowledge = "probe" if probed else "scan"
    if lock["nodes"] and not probed:
        notes.append(f"node classes and model folders come from the static scan of the pinned sources; "
                     f"`lock --probe PYTHON` or `comfyver realize {vid} && comfyver probe {vid}` checks them in ComfyUI itself")
    if python:
        pyproject, reqs, pynotes = pylock.generate(lock)
        notes += pynotes
        pylock.uv_lock(vdir, pyproject, reqs, f"version {vid}")
        if note := pylock.settle_profile(lock, vdir):
            notes.append(note)
    for w, rel in names:
        atomic_write_bytes(vdir / rel, w.read_bytes())
    versions.save(root, vid, lock)
    return {"version": vid, "nodes": sorted(lock["nodes"]), "models": sorted(lock["models"]),
            "workflows": lock["workflows"], "added_nodes": sorted(set(need) | set(explicit)),
            "added_models": sorted(originals), "python": lock["python"], "uv_lock": bool(python), "notes": notes,
            "knowledge": knowledge,
            "placed": [{"model": k, "folder": m["folder"], "source": m.get("source"), "url": web.redact(m["url"]),
                        "used_by": m["used_by"]} for k, m in sorted(rep.models.items()) if k in originals]}


def analyze_workflows(paths, vid=None, comfyui=None, registry=True) -> analyze.Report:
    """`comfyver analyze`: the report for workflow files, against a locked version, a local ComfyUI or nothing."""
    wfs = [analyze.load(w) for w in paths]
    mgr = nodemap.manager()
    if vid:
        root = project.find_root()
        lock = lockfile.read(project.lock_path(root, vid))
        nm, inputs = nodemap.for_lock(lock, project.version_dir(root, vid), registry=registry, manager_data=mgr)
    elif comfyui:
        core = nodesource.scan_tree(comfyui, core=True)
        nm, inputs = nodemap.NodeMap(core_classes=core, manager_data=mgr, registry=registry), core
    else:
        rev, core = nodesource.newest_cached_core()
        nm, inputs = nodemap.NodeMap(core_classes=core, manager_data=mgr, registry=registry), core or {}
        rep = analyze.report(wfs, nm, inputs, mgr)
        rep.notes.append(f"core classes from the newest cached ComfyUI scan ({rev[:12]}); --version ID or --comfyui DIR "
                         "checks against a specific core" if rev else "no ComfyUI core scan is cached: core classes "
                         "come from the workflow's cnr_id and ComfyUI-Manager; --version ID or --comfyui DIR scans one")
        return rep
    return analyze.report(wfs, nm, inputs, mgr)
