"""From what users have today to a version.

Two inputs are understood (JSON or YAML, detected by content):
- a ComfyUI-Manager snapshot: `comfyui` (commit), `git_custom_nodes` ({url: {hash, disabled}}),
  `cnr_custom_nodes` ({registry id: version}), `file_custom_nodes`, `pips` ({"pkg==ver": ""}).
  Disabled and single-file nodes are skipped with a note; `pips` is evidence only: after the
  Python lock, every pin that differs from uv.lock is reported.
- a `config.yml` style list: `comfyui: {url?, version?}` (optional), `nodes: [{url, version}]` with
  version `latest|nightly|<tag>|<commit>|<branch>`, `models: [{url, destination, optional?, sha256?}]`;
  `destination` is `<folder>/<name>` (a leading `models/` is dropped; a folder alone takes the
  URL's file name). Optional models that fail to resolve are skipped with a note.
- Comfy-Org's `comfy-build.yaml` (`schema: comfy-build/1`, what `comfy build init` writes): `definition`'s
  `baseComfyVersion` (a tag, branch or commit; a bare `0.3.40` is `v0.3.40`), `customNodes` ({name, id +
  registryVersion} or {name, repository, gitRef?, commit?}: a commit wins over gitRef), `models` ({type, filename?,
  sourceUri, sha256?}: the key is `<type>/<filename or the URL's file name>`) and `pipDependencies` (requirements
  text: each requirement becomes a `--pip` requirement of the version). An entry uploaded to Comfy's builder
  (`blobId`) has no public source: every such entry and every malformed one is named in one error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import GitLocked, GitOriginal, Lock, ModelLocked, ModelOriginal, Node, NodeLocked, NodeOriginal
from comfyver.lock import nodesource, versions
from comfyver.sources import gitsource, registry, resolve


@dataclass
class Plan:
    """What an import asks for, before resolution."""
    kind: str                                           # snapshot | config | install
    comfyui: GitOriginal
    nodes: dict[str, NodeOriginal] = field(default_factory=dict)     # name -> original
    models: dict[str, ModelOriginal] = field(default_factory=dict)   # path -> original
    optional: set[str] = field(default_factory=set)          # model paths that may fail
    pips: dict[str, str] = field(default_factory=dict)       # package -> pinned version (snapshot evidence)
    requirements: list[str] = field(default_factory=list)    # what `lock --pip` adds (comfy-build pipDependencies)
    notes: list[str] = field(default_factory=list)


def read(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ComfyverError(f"{p}: neither JSON nor YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ComfyverError(f"{p}: expected a mapping at the top level")
    return data


def plan(data: dict[str, Any], source: str, comfyui_url: str = versions.DEFAULT_COMFYUI_URL) -> Plan:
    if data.get("schema") == COMFY_BUILD or isinstance(data.get("definition"), dict):
        return _comfy_build(data, source, comfyui_url)
    if "git_custom_nodes" in data or "cnr_custom_nodes" in data or isinstance(data.get("comfyui"), str):
        return _snapshot(data, source, comfyui_url)
    if "nodes" in data or "models" in data:
        return _config(data, source, comfyui_url)
    raise ComfyverError(f"{source}: neither a ComfyUI-Manager snapshot (comfyui, git_custom_nodes, cnr_custom_nodes) "
                        "nor a config.yml (nodes, models)")


def saved_workflow_name(filename: str) -> str:
    """Where a version keeps a workflow file: workflows/<its name with [^A-Za-z0-9._-] as '-'>.json."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", filename)
    return f"workflows/{base if base.endswith('.json') else base + '.json'}"


def add_node(pl: Plan, name: str, original: NodeOriginal, source: str) -> None:
    if name in pl.nodes and pl.nodes[name] != original:
        raise ComfyverError(f"{source}: two different entries for node {name!r}",
                            hint="keep one of them in the file")
    pl.nodes[name] = original


def _snapshot(data: dict[str, Any], source: str, comfyui_url: str) -> Plan:
    core = data.get("comfyui")
    if not isinstance(core, str) or not core:
        raise ComfyverError(f"{source}: $.comfyui: expected the ComfyUI commit")
    pl = Plan("snapshot", {"type": "git", "url": comfyui_url, "ref": core})
    for url, info in (data.get("git_custom_nodes") or {}).items():
        info = info if isinstance(info, dict) else {}
        if info.get("disabled"):
            pl.notes.append(f"{source}: node {url} is disabled in the snapshot; skipped")
            continue
        spec = f"{url}@{info['hash']}" if info.get("hash") else url
        name, original = resolve.parse_node_spec(spec)
        add_node(pl, name, original, source)
    for nid, ver in (data.get("cnr_custom_nodes") or {}).items():
        name, original = resolve.parse_node_spec(f"{nid}@{ver}" if ver else nid)
        add_node(pl, name, original, source)
    for f in data.get("file_custom_nodes") or []:
        fname = f.get("filename") if isinstance(f, dict) else f
        pl.notes.append(f"{source}: single-file node {fname!r} skipped (no source to pin; publish it in a git repo "
                        "and add it with --node)")
    for line in data.get("pips") or {}:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if pins:
            pl.pips[canonicalize_name(req.name)] = pins[0]
    return pl


def model_path(destination: str, url: str, what: str) -> str:
    d = destination.replace("\\", "/").strip()
    d = d[len("models/"):] if d.startswith("models/") else d
    parts = [x for x in d.split("/") if x]
    if len(parts) == 1 or d.endswith("/") or not PurePosixPath(parts[-1]).suffix:
        name = unquote(PurePosixPath(urlsplit(url).path).name)
        if not name:
            raise UsageError(f"{what}: destination {destination!r} is a folder and the URL has no file name",
                             hint="write the destination as <folder>/<file name>")
        parts.append(name)
    key = "/".join(parts)
    try:
        lockfile.check_model_path(key)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None
    return key


def _config(data: dict[str, Any], source: str, comfyui_url: str) -> Plan:
    core = data.get("comfyui") or {}
    if isinstance(core, str):
        core = {"version": core}
    pl = Plan("config", {"type": "git", "url": core.get("url", comfyui_url), "ref": str(core.get("version", "latest"))})
    for i, n in enumerate(data.get("nodes") or []):
        what = f"{source}: nodes[{i}]"
        if not isinstance(n, dict) or not isinstance(n.get("url"), str):
            raise UsageError(f"{what}: expected {{url, version}}")
        ver = str(n.get("version") or "latest")
        name, original = resolve.parse_node_spec(f"{n['url']}@{ver}")
        if n.get("name"):
            name = str(n["name"])
        add_node(pl, name, original, source)
    for i, m in enumerate(data.get("models") or []):
        what = f"{source}: models[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("url"), str) or not m.get("destination"):
            raise UsageError(f"{what}: expected {{url, destination, optional?}}")
        key = model_path(str(m["destination"]), m["url"], what)
        pl.models[key] = resolve.parse_model_source(m["url"], m.get("sha256"))
        if m.get("optional"):
            pl.optional.add(key)
    return pl


COMFY_BUILD = "comfy-build/1"
V = TypeVar("V")


def _comfy_build(data: dict[str, Any], source: str, comfyui_url: str) -> Plan:
    """Comfy-Org's comfy-build.yaml (module docstring); every entry that cannot be pinned named in one error."""
    if data.get("schema") != COMFY_BUILD:
        raise ComfyverError(f"{source}: schema {data.get('schema')!r}: only {COMFY_BUILD!r} (comfy-build.yaml) is read")
    bad: list[str] = []
    d = data.get("definition")
    if not isinstance(d, dict):
        bad.append("definition: expected a mapping (baseComfyVersion, customNodes, models, pipDependencies)")
        d = {}
    pl = Plan("comfy-build", {"type": "git", "url": comfyui_url, "ref": _comfy_build_core(d.get("baseComfyVersion"), bad)})
    _entries(d, "customNodes", _comfy_build_node, pl.nodes, "node", bad, named=True)
    _entries(d, "models", _comfy_build_model, pl.models, "the model", bad)
    pip = d.get("pipDependencies")
    if pip is not None and not isinstance(pip, str):
        bad.append("definition.pipDependencies: expected requirements-file text (a string)")
    seen: dict[str, int] = {}
    for no, line in enumerate(pip.splitlines() if isinstance(pip, str) else [], 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}: definition.pipDependencies line {no}"
        try:
            req = Requirement(line)
        except InvalidRequirement:
            pl.notes.append(f"{where}: {line[:80]!r} is not a requirement (an option or a file): left out")
            continue
        if req.url:
            pl.notes.append(f"{where}: {req.name} from a URL: left out (uv.lock pins packages from an index)")
            continue
        if (key := canonicalize_name(req.name)) in seen:
            pl.notes.append(f"{where}: {req.name} again: it replaces line {seen[key]}")
        seen[key] = no
        pl.requirements.append(str(req))
    if bad:
        raise UsageError(f"{source}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} cannot be pinned:\n  "
                         + "\n  ".join(bad), hint="fix them in the file (or leave them out) and import again")
    return pl


def _entries(d: dict[str, Any], field: str, parse: Callable[[Any], tuple[str, V]], into: dict[str, V], kind: str,
             bad: list[str], named: bool = False) -> None:
    """Each entry of the list `definition.<field>` parsed into `into` (key -> value), once per key; what is wrong with
    one is added to `bad`, named by its index (and its `name` where `named`)."""
    for i, entry in enumerate(_listed(d, field, bad)):
        try:
            key, value = parse(entry)
            if key in into:
                raise UsageError(f"a second entry for {kind} {key!r}")
            into[key] = value
        except ComfyverError as exc:
            shown = entry.get("name") if named and isinstance(entry, dict) else None
            label = f" ({shown})" if isinstance(shown, str) and shown.isprintable() else ""
            bad.append(f"definition.{field}[{i}]{label}: {exc.message}")


def _listed(d: dict[str, Any], field: str, bad: list[str]) -> list[Any]:
    got = d.get(field)
    if got is None:
        return []
    if not isinstance(got, list):
        bad.append(f"definition.{field}: expected a list")
        return []
    return got


def _comfy_build_core(given: object, bad: list[str]) -> str:
    """baseComfyVersion as a ref: a tag, branch or commit; a bare `0.3.40` is `v0.3.40`."""
    if not isinstance(given, str) or not given.strip():
        bad.append("definition.baseComfyVersion: " + ("no ComfyUI version" if given is None else f"{given!r} is not a "
                   "string") + " (a tag, branch or commit, written as a string); set it with "
                   "`comfy build update . --comfy-version <ref>`")
        return "latest"
    ref = given.strip()
    ref = f"v{ref}" if re.fullmatch(r"\d+\.\d+\.\d+", ref) else ref
    try:
        return gitsource.check_ref(ref, "definition.baseComfyVersion")
    except ComfyverError as exc:
        bad.append(exc.message)
        return "latest"


def _comfy_build_node(n: object) -> tuple[str, NodeOriginal]:
    """A customNodes entry: (node name, original); UsageError saying what is wrong with it."""
    if not isinstance(n, dict):
        raise UsageError("expected a mapping {name, id + registryVersion | repository, gitRef?, commit?}")
    if n.get("blobId"):
        raise UsageError("uploaded to Comfy's builder (blobId): no public source to pin; publish the pack in a git "
                         "repository or the Comfy Registry and name it by `repository` or `id`")
    name = n.get("name")
    if name is not None and not (isinstance(name, str) and lockfile.NODE_NAME_RE.match(name)):
        raise UsageError(f"name {name!r} is not a custom_nodes folder name ([A-Za-z0-9][A-Za-z0-9._-]*)")
    original: NodeOriginal
    if "registryVersion" in n:
        nid, ver = n.get("id"), n.get("registryVersion")
        if not (isinstance(nid, str) and registry.ID_RE.match(nid)):
            raise UsageError(f"id {nid!r} is not a Comfy Registry node id")
        if not (isinstance(ver, str) and re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", ver)):
            raise UsageError(f"registryVersion {ver!r} is not a published version (three numbers such as 1.0.2)")
        original = {"type": "registry", "id": nid, "version": ver}
        derived = nid
    elif "repository" in n:
        url = gitsource.check_url(n["repository"], "repository")
        if "@" in urlsplit(url).netloc:
            raise UsageError("repository: a URL with user information is refused (it may hold a secret)")
        commit, ref = n.get("commit"), n.get("gitRef")
        if commit is not None and not (isinstance(commit, str) and gitsource.HEX40.match(commit.lower())):
            raise UsageError(f"commit {commit!r} is not a 40-hex commit")
        if ref is not None and not isinstance(ref, str):
            raise UsageError(f"gitRef {ref!r} is not a string (a tag, branch or commit, quoted)")
        pinned = commit.lower() if isinstance(commit, str) else ref or "latest"
        original = {"type": "git", "url": url, "ref": gitsource.check_ref(pinned, "gitRef")}
        derived = resolve.parse_node_spec(url)[0]
    else:
        raise UsageError("expected {name, id, registryVersion} or {name, repository, gitRef?, commit?}")
    return name or derived, original


def _comfy_build_model(m: object) -> tuple[str, ModelOriginal]:
    """A models entry: (model key `<type>/<filename>`, original); UsageError saying what is wrong with it."""
    if not isinstance(m, dict):
        raise UsageError("expected a mapping {type, filename?, sourceUri, sha256?}")
    if m.get("blobId"):
        raise UsageError("uploaded to Comfy's builder (blobId): no public source to pin; give it a sourceUri "
                         "(or pin it with `comfyver add-model`)")
    url, folder, file_name, sha = m.get("sourceUri"), m.get("type"), m.get("filename"), m.get("sha256")
    if not isinstance(url, str) or not url:
        raise UsageError("expected a sourceUri (the model's download URL)")
    if not isinstance(folder, str) or not folder or folder.startswith("/") or not folder.isprintable():
        raise UsageError(f"type {folder!r} is not a folder under models/ (relative, e.g. checkpoints)")
    if file_name is None:
        file_name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not isinstance(file_name, str) or not file_name or "/" in file_name or not file_name.isprintable():
        raise UsageError(f"filename {file_name!r} is not one file name" if file_name else
                         "the sourceUri has no file name: give a filename")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise UsageError(f"sha256 {sha!r} is not a 64-hex digest")
    key = f"{folder.strip('/')}/{file_name}"
    try:
        lockfile.check_model_path(key)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return key, resolve.parse_model_source(url, sha.lower() if isinstance(sha, str) else None)


def build(vid: str, pl: Plan, *, jobs: int = resolve.DEFAULT_JOBS, progress: bool = True) -> Lock:
    """Resolve a plan into a lock (in memory); optional models that fail become notes."""
    items = [resolve.Item("comfyui", "git", pl.comfyui)]
    items += [resolve.Item(f"nodes.{n}", resolve.kind_of(o), o) for n, o in pl.nodes.items()]
    items += [resolve.Item(f"models.{k}", "model", o) for k, o in pl.models.items() if k not in pl.optional]
    locked = resolve.lock_items(items, jobs=jobs, progress=progress)
    optional = [resolve.Item(f"models.{k}", "model", pl.models[k]) for k in sorted(pl.optional)]
    try:
        locked.update(resolve.lock_items(optional, jobs=jobs, progress=progress))
    except resolve.ResolveFailed as exc:
        for k, msg in sorted(exc.failures.items()):
            pl.notes.append(f"optional {k} skipped: {msg}")
        ok = [it for it in optional if it.key not in exc.failures]
        locked.update(resolve.lock_items(ok, jobs=jobs, progress=False) if ok else {})
    # each item is locked by its kind's locker: GitLocked for the core, NodeLocked for nodes, ModelLocked for models
    lock = lockfile.empty(vid, pl.comfyui, cast(GitLocked, locked["comfyui"]))
    for name, o in sorted(pl.nodes.items()):
        loc = cast(NodeLocked, locked[f"nodes.{name}"])
        entry: Node = {"original": o, "locked": loc}
        provides = nodesource.scan_locked_node(name, loc)
        if provides:
            entry["provides"] = sorted(provides)
        lock["nodes"][name] = entry
    for key, mo in sorted(pl.models.items()):
        if f"models.{key}" in locked:
            lock["models"][key] = {"original": mo, "locked": cast(ModelLocked, locked[f"models.{key}"])}
    return lock


def pip_differences(pl: Plan, python_packages: dict[str, str]) -> list[str]:
    """Snapshot pins that the Python lock does not reproduce."""
    out = []
    for pkg, ver in sorted(pl.pips.items()):
        got = python_packages.get(pkg)
        if got is None:
            continue
        if got != ver and re.sub(r"\+.*$", "", ver) != got:
            out.append(f"{pkg}: snapshot had {ver}, the lock has {got}")
    return out
