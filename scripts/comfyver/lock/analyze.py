"""Workflow parsing: which node classes and which model files a workflow uses.

Reads both formats ComfyUI writes:
- API format: `{"<id>": {"class_type": ..., "inputs": {...}}}`
- UI format: `{"nodes": [...], "links": [...], "extra": {...}, "definitions": {...}}`,
  entering group nodes (`extra.groupNodes`, type `workflow>NAME` or `workflow/NAME`)
  and subgraphs (`definitions.subgraphs`, nested, instances typed by the subgraph's id).

Muted (mode 2) and bypassed (mode 4) nodes are listed but marked. Frontend-only
nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are not dependencies.

Which inputs name model files comes from the caller (`model_inputs`: class ->
ordered [(input, folder)], scanned from the locked sources by nodemap) plus a
table of well-known input names. In the UI format widget values are positional,
so the k-th model-looking value of a node is matched to the k-th model input of
its class.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from comfyver.base import uiworkflow
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import Model
from comfyver.lock import nodemap as nodemap_mod  # the module; `nodemap` below is the NodeMap a report asks
from comfyver.lock import placement
from comfyver.lock.nodemap import VIRTUAL_CLASSES
from comfyver.sources import modelsearch

MODES = {0: "active", 1: "on-event", 2: "muted", 3: "always", 4: "bypassed"}
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft", ".pkl", ".pt2", ".engine")
# input name -> models/ folder, for classes whose source was not scanned (API format)
WELL_KNOWN_INPUTS = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "unet_name": "diffusion_models",
    "clip_name": "text_encoders", "clip_name1": "text_encoders", "clip_name2": "text_encoders",
    "clip_name3": "text_encoders", "clip_name4": "text_encoders", "control_net_name": "controlnet",
    "style_model_name": "style_models", "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
    "upscale_model_name": "upscale_models", "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders", "lora": "loras",
}
# class-specific meanings of generic input names (used when no scan is available)
WELL_KNOWN_CLASS_INPUTS = {
    "CLIPVisionLoader": [("clip_name", "clip_vision")],
    "UpscaleModelLoader": [("model_name", "upscale_models")],
    "CheckpointLoader": [("config_name", "configs"), ("ckpt_name", "checkpoints")],
    "ModelPatchLoader": [("name", "model_patches")],
}


@dataclass
class NodeUse:
    """One node instance in a workflow."""
    class_type: str
    node_id: str               # "12", or "5:3" inside a subgraph/group node instance 5
    workflow: str
    mode: str = "active"
    cnr_id: str | None = None
    aux_id: str | None = None
    ver: str | None = None
    named: dict[str, Any] = field(default_factory=dict)  # input name -> value (API format, dict widgets, promoted widgets)
    positional: list[Any] = field(default_factory=list)  # UI widgets_values (list form)
    linked: bool = True        # UI format: False when no link enters or leaves it (a frontend-only node looks so)
    feeds: bool = True         # UI format: False when it has outputs and none is linked (ComfyUI does not run it)
    connected: frozenset[str] | None = None  # inputs a link fills (None: not known)

    @property
    def virtual(self) -> bool:
        return self.class_type in VIRTUAL_CLASSES


@dataclass
class ModelSource:
    """A model the workflow itself says where to get (`models` entries)."""
    name: str
    folder: str | None
    url: str | None
    sha256: str | None


@dataclass
class ModelUse:
    folder: str | None
    name: str
    class_type: str
    input: str | None
    workflow: str
    node_id: str
    mode: str = "active"
    feeds: bool = True         # its node's outputs reach something (see NodeUse.feeds)

    @property
    def optional(self) -> str | None:
        """Why ComfyUI will not load it (its node bypassed, muted or connected to nothing), else None."""
        if self.mode in ("muted", "bypassed"):
            return self.mode
        return None if self.feeds else "unconnected"


@dataclass
class Workflow:
    path: str
    format: str                # "api" | "ui"
    nodes: list[NodeUse]
    sources: list[ModelSource]
    node_versions: dict[str, str] = field(default_factory=dict)  # extra.node_versions: pack -> version or commit


class WorkflowError(ComfyverError):
    pass


def load(path: str | os.PathLike[str]) -> Workflow:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError(f"workflow {p}: no such file", exit_code=2) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"workflow {p}: not a JSON workflow ({exc})",
                            hint="export it from ComfyUI with Workflow > Export (or Export (API))") from None
    return parse(data, str(path))


def parse(data: Any, name: str) -> Workflow:
    if uiworkflow.is_ui(data):
        return _parse_ui(data, name)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "nodes" not in data:
        return parse(data["prompt"], name)  # an /prompt request body
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return _parse_api(data, name)
    raise WorkflowError(f"workflow {name}: neither the UI format (a 'nodes' list) nor the API format "
                        "({id: {class_type, inputs}})",
                        hint="export it from ComfyUI with Workflow > Export (or Export (API))")


def _parse_api(data: dict[str, Any], name: str) -> Workflow:
    nodes = []
    for nid, n in data.items():
        ct = n.get("class_type")
        if not isinstance(ct, str) or not ct:
            raise WorkflowError(f"workflow {name}: node {nid} has no class_type")
        inputs = _dict(n.get("inputs"))
        named = {k: v for k, v in inputs.items() if not _is_link(v)}
        nodes.append(NodeUse(ct, str(nid), name, named=named,
                             connected=frozenset(str(k) for k, v in inputs.items() if _is_link(v))))
    return Workflow(name, "api", nodes, [])


def _dict(v: Any) -> dict[str, Any]:
    """A JSON value that should be an object, else {}."""
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    """A JSON value that should be an array, else []."""
    return v if isinstance(v, list) else []


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _mode(n: dict[str, Any]) -> str:
    m = n.get("mode", 0)
    return MODES.get(m, f"mode-{m}") if isinstance(m, int) else "active"


def _sources(entries: Any, folder_default: str | None = None) -> list[ModelSource]:
    out = []
    for m in _list(entries):
        if isinstance(m, dict) and isinstance(m.get("name"), str):
            h = m.get("hash") if str(m.get("hash_type", "sha256")).lower() == "sha256" else None
            h = h.lower() if isinstance(h, str) and re.fullmatch(r"[0-9a-fA-F]{64}", h) else None
            out.append(ModelSource(m["name"], m.get("directory") or folder_default,
                                   m.get("url") if isinstance(m.get("url"), str) else None, h))
    return out


def _parse_ui(data: dict[str, Any], name: str) -> Workflow:
    extra = _dict(data.get("extra"))
    groups = _dict(extra.get("groupNodes"))
    defs = _dict(data.get("definitions"))
    subgraphs = {sg["id"]: sg for sg in defs.get("subgraphs", []) or [] if isinstance(sg, dict) and "id" in sg}
    out: list[NodeUse] = []
    sources = _sources(data.get("models"))

    def walk(nodes: Any, prefix: str, outer_mode: str | None, stack: tuple[str, ...]) -> None:
        for n in _list(nodes):
            if not isinstance(n, dict):
                continue
            t = n.get("type")
            if not isinstance(t, str) or not t:
                continue
            nid = f"{prefix}{n.get('id')}"
            mode = _mode(n)
            if outer_mode and outer_mode != "active":
                mode = outer_mode
            props = _dict(n.get("properties"))
            sources.extend(_sources(props.get("models")))
            if t in subgraphs:
                if t in stack:
                    raise WorkflowError(f"workflow {name}: subgraph {t} contains itself (node {nid})")
                sg = subgraphs[t]
                walk(sg.get("nodes"), nid + ":", mode, stack + (t,))
                _apply_promoted(sg, n, out, nid + ":")
                continue
            gname = t.split(">", 1)[1] if t.startswith("workflow>") else (
                t.split("/", 1)[1] if t.startswith("workflow/") else None)
            if gname is not None and gname in groups:
                _walk_group(groups[gname], n, nid + ":", mode, name, out)
                continue
            wv = n.get("widgets_values")
            out.append(NodeUse(t, nid, name, mode, _str(props.get("cnr_id")), _str(props.get("aux_id")),
                               _str(props.get("ver")), named=dict(wv) if isinstance(wv, dict) else {},
                               positional=list(wv) if isinstance(wv, list) else [], linked=_has_links(n),
                               feeds=_feeds(n), connected=_connected(n)))

    walk(data["nodes"], "", None, ())
    versions = {k: v for k, v in _dict(extra.get("node_versions")).items() if isinstance(k, str) and isinstance(v, str) and v
                and re.fullmatch(r"[\w.+-]{1,100}", v)}
    return Workflow(name, "ui", out, sources, versions)


def _connected(n: dict[str, Any]) -> frozenset[str]:
    return frozenset(str(i["name"]) for i in _list(n.get("inputs"))
                     if isinstance(i, dict) and i.get("link") is not None and isinstance(i.get("name"), str))


def _has_links(n: dict[str, Any]) -> bool:
    return (any(isinstance(i, dict) and i.get("link") is not None for i in _list(n.get("inputs")))
            or any(isinstance(o, dict) and o.get("links") for o in _list(n.get("outputs"))))


def _feeds(n: dict[str, Any]) -> bool:
    """False for a node with outputs none of which is linked: ComfyUI runs only what leads to an output node, so
    its models are optional. A node without an outputs list (an output node, a group's inner node) feeds."""
    outs = n.get("outputs")
    if not isinstance(outs, list) or not outs:
        return True
    return any(isinstance(o, dict) and o.get("links") for o in outs)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _walk_group(group: dict[str, Any], inst: dict[str, Any], prefix: str, mode: str, name: str,
                out: list[NodeUse]) -> None:
    """A legacy group node: its inner nodes, with the instance's widget values spread over them."""
    values = _list(inst.get("widgets_values"))
    for i, n in enumerate(_list(group.get("nodes"))):
        if not isinstance(n, dict) or not isinstance(n.get("type"), str):
            continue
        wv = n.get("widgets_values")
        props = _dict(n.get("properties"))
        out.append(NodeUse(n["type"], f"{prefix}{n.get('index', i)}", name,
                           mode if mode != "active" else _mode(n), _str(props.get("cnr_id")),
                           _str(props.get("aux_id")), _str(props.get("ver")),
                           named=dict(wv) if isinstance(wv, dict) else {},
                           positional=list(wv) if isinstance(wv, list) else []))
    # the instance holds the current widget values of all inner nodes, in order; without the
    # classes' schemas they cannot be split per node, so its model-looking values replace the
    # definition's model-looking values one for one, in order
    if values:
        it = iter(v for v in values if _looks_like_model(v))
        for use in out:
            if use.node_id.startswith(prefix):
                use.positional = [next(it, v) if _looks_like_model(v) else v for v in use.positional]


def _apply_promoted(sg: dict[str, Any], inst: dict[str, Any], out: list[NodeUse], prefix: str) -> None:
    """Widgets promoted to a subgraph instance (`properties.proxyWidgets`) override inner values."""
    proxies = _dict(inst.get("properties")).get("proxyWidgets")
    values = inst.get("widgets_values")
    if not isinstance(proxies, list) or not isinstance(values, list):
        return
    uses = {u.node_id: u for u in out if u.node_id.startswith(prefix) and ":" not in u.node_id[len(prefix):]}
    links = {}
    for lk in map(uiworkflow.read_link, sg.get("links") or []):
        if lk:
            links[lk.id] = (lk.target_id, lk.target_slot)
    inner = {str(n.get("id")): n for n in sg.get("nodes") or [] if isinstance(n, dict)}
    sg_inputs = {i.get("name"): i for i in sg.get("inputs") or [] if isinstance(i, dict)}
    for proxy, value in zip(proxies, values):
        if not (isinstance(proxy, list) and len(proxy) == 2):
            continue
        node_ref, widget = str(proxy[0]), proxy[1]
        targets = []
        if node_ref == "-1" and widget in sg_inputs:
            for lid in sg_inputs[widget].get("linkIds") or []:
                tid, slot = links.get(lid, (None, None))
                n = inner.get(str(tid))
                if n and isinstance(slot, int) and slot < len(n.get("inputs") or []):
                    w = (n["inputs"][slot].get("widget") or {}).get("name")
                    if w:
                        targets.append((str(tid), w))
        elif node_ref in inner:
            targets.append((node_ref, widget))
        for tid, w in targets:
            use = uses.get(prefix + tid)
            if use is not None:
                use.named[w] = value


def _looks_like_model(v: Any) -> bool:
    return isinstance(v, str) and v.lower().endswith(MODEL_EXTS) and "\n" not in v and len(v) < 400


NOT_A_FILE = {"", "none", "null", "disabled", "undefined"}


def model_uses(wf: Workflow, model_inputs: dict[str, list[tuple[str, str]]]) -> list[ModelUse]:
    """Every model file a workflow's nodes name, with its folder where known (None otherwise): nothing that
    looks like a model file is dropped, whatever the class's scan says.

    `model_inputs` holds every scanned class (an empty list = scanned, no folder_paths input found); a value
    of a known model input counts (unless it is "None"), and so does every value that looks like a model file
    (a known extension), in any input: its folder comes from the scan, the well-known input names, the
    workflow's `models` entries, or stays unknown (a problem for lock to report)."""
    by_name = {s.name: s.folder for s in wf.sources if s.folder}
    out = []
    for u in wf.nodes:
        if u.virtual:
            continue
        scanned = u.class_type in model_inputs
        known = model_inputs[u.class_type] if scanned else WELL_KNOWN_CLASS_INPUTS.get(u.class_type, [])
        known_map = dict(known)
        seen = set()
        for k, v in u.named.items():
            if not isinstance(v, str) or v.strip().lower() in NOT_A_FILE:
                continue
            folder = known_map.get(k) or (WELL_KNOWN_INPUTS.get(k) if not known or _looks_like_model(v) else None)
            if folder or _looks_like_model(v):
                out.append(ModelUse(folder or by_name.get(_base(v)), v, u.class_type, k, wf.path, u.node_id, u.mode,
                                    u.feeds))
                seen.add(v)
        values = [v for v in u.positional if _looks_like_model(v)]
        model_slots = [(i, f) for i, f in known if f not in ("configs",)]
        for i, v in enumerate(values):
            if i < len(model_slots):
                inp, folder = model_slots[i]
            elif model_slots:
                inp, folder = model_slots[-1]
            else:
                inp, folder = None, None
            if (inp and inp in u.named) or v in seen:
                continue  # overridden by a promoted widget, or already counted
            seen.add(v)
            out.append(ModelUse(folder or by_name.get(_base(v)), v, u.class_type, inp, wf.path, u.node_id, u.mode,
                                u.feeds))
    return out


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def model_key(folder: str, name: str) -> str:
    """The lock key `<folder>/<name>`; Windows separators in names become '/'."""
    return f"{folder}/{name.replace(chr(92), '/')}"


# ---------------------------------------------------------------- the whole picture

@dataclass
class Report:
    workflows: list[str]
    core: list[str]                      # built-in classes used
    packs: dict[str, dict[str, Any]]     # node name -> {url?, registry_id?, version?, classes, via, active}
    models: dict[str, dict[str, Any]]    # "<folder>/<name>" (or "?/<name>") -> {folder, name, url?, sha256?, ...}
    unresolved: dict[str, dict[str, Any]]  # class -> {why, workflows, active}
    ambiguous: dict[str, dict[str, Any]]   # class -> {candidates, workflows, active}
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "workflows": self.workflows,
            "packs": sorted({p["url"] for p in self.packs.values() if p.get("url")}),
            "nodes": self.packs,
            "core": self.core,
            "models": list(self.models.values()),
            "unresolved": self.unresolved,
            "ambiguous": {c: v["candidates"] for c, v in self.ambiguous.items()},
            "notes": self.notes,
        }


def _settle_ambiguous(workflows: list[Workflow], nm: nodemap_mod.NodeMap, packs: dict[str, dict[str, Any]],
                      ambiguous: dict[str, dict[str, Any]], notes: list[str]) -> None:
    """Classes several packs provide, decided by the workflows' own evidence where it is decisive
    (nodemap.pick_by_evidence); the evidence goes into the pack's `evidence` and the notes."""
    mgr = nm.mgr
    used = {u.class_type for wf in workflows for u in wf.nodes if u.mode not in ("muted", "bypassed")}
    for c in list(ambiguous):
        decided = {nodemap_mod.norm_url(p["url"]) for p in packs.values() if p.get("url") and p["active"]}
        url, why = nodemap_mod.pick_by_evidence(c, ambiguous[c]["candidates"], used, decided, mgr)
        if url is None:
            ambiguous[c]["why"] += f" ({why})"
            # listed best supported first (most of the workflows' classes); the --choose hint proposes none
            ambiguous[c]["candidates"] = sorted(ambiguous[c]["candidates"], key=lambda x: -len(
                mgr.by_url.get(x.split(" ", 1)[-1], set()) & used))
            continue
        e = ambiguous.pop(c)
        p = nm._url_pack(url)
        cur = packs.setdefault(p.name, {"name": p.name, "url": p.url, "registry_id": None, "version": None,
                                        "via": "evidence", "classes": [], "active": False})
        cur["classes"].append(c)
        cur["active"] = cur["active"] or e["active"]
        cur.setdefault("evidence", {})[c] = why
        notes.append(f"class {c}: picked {p.name} among {len(e['candidates'])} candidates: {why}")


def settle_folders_from_lock(models: dict[str, dict[str, Any]], locked: dict[str, Model]) -> None:
    """A model whose folder the analysis cannot tell (`?/<name>`) that the lock holds under exactly one folder
    (given once with --model) takes that folder: lock again and check agree with what lock decided."""
    for key in [k for k in models if k.startswith("?/")]:
        m = models[key]
        hits = [k for k in locked if k.split("/", 1)[1] == m["name"]]
        if len(hits) == 1:
            folder = hits[0].split("/", 1)[0]
            target = models.setdefault(hits[0], {**m, "folder": folder, "used_by": []})
            target["used_by"] += [u for u in m["used_by"] if u not in target["used_by"]]
            target["active"] = target.get("active", False) or m["active"]
            del models[key]


def _saved_versions(workflows: list[Workflow], packs: dict[str, dict[str, Any]]) -> None:
    """A pack decided without a version takes the one the workflow recorded in `extra.node_versions` (keyed by
    registry id or repository name), so it is locked as it was saved with."""
    saved = {k.lower(): v for wf in workflows for k, v in wf.node_versions.items()}
    for p in packs.values():
        if p["version"] or p["via"] in ("override", "choice"):
            continue
        keys = {p["name"].lower(), (p.get("registry_id") or "").lower()}
        if p.get("url"):
            keys.add(p["url"].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git").lower())
        hit = next((saved[k] for k in keys if k in saved), None)
        if hit:
            p["version"], p["version_from"] = hit, "extra.node_versions"


def _place_by_manager(models: dict[str, dict[str, Any]], manager: nodemap_mod.ManagerData) -> None:
    """A model whose folder the analysis cannot tell (`?/<name>`, a loader the scan could not follow) that
    ComfyUI-Manager's model list installs into exactly one folder goes there: that folder is known."""
    for key in [k for k in models if k.startswith("?/")]:
        m = models[key]
        folder = placement.unique_folder(nodemap_mod.manager_folder(h) for h in manager.model_sources(m["name"], None))
        if folder is None:
            continue
        name = placement.file_name(folder, m["name"])
        target = models.setdefault(model_key(folder, name), {**m, "folder": folder, "name": name, "used_by": []})
        target["used_by"] += [u for u in m["used_by"] if u not in target["used_by"]]
        target["active"] = target.get("active", False) or m["active"]
        del models[key]


@dataclass
class _Decisions:
    """Every class of the workflows, decided: the built-in ones, the packs (by lock name), the classes left
    unresolved or ambiguous, and the notes said on the way. The entries are the report's (and --json's)."""
    core: set[str] = field(default_factory=set)
    packs: dict[str, dict[str, Any]] = field(default_factory=dict)       # node name -> Report.packs entry
    unresolved: dict[str, dict[str, Any]] = field(default_factory=dict)  # class -> {why, candidates, workflows, active}
    ambiguous: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Slot(NamedTuple):
    """Where a used model is kept: its lock key, folder (None: not known) and file name there."""
    key: str
    folder: str | None
    name: str


def report(workflows: list[Workflow], nodemap: nodemap_mod.NodeMap, model_inputs: dict[str, list[tuple[str, str]]],
           manager: nodemap_mod.ManagerData | None = None, search: modelsearch.Search | None = None) -> Report:
    """Decide every class with `nodemap`, collect every model with its best-known source (with `search`: a
    model no workflow or ComfyUI-Manager entry gives one for is searched, sources/modelsearch.py)."""
    found = _Decisions()
    for wf in workflows:
        _decide_classes(wf, nodemap, found)
    _settle_ambiguous(workflows, nodemap, found.packs, found.ambiguous, found.notes)
    _saved_versions(workflows, found.packs)
    models = _collect_models(workflows, model_inputs)
    if manager is not None:
        found.notes += _manager_missing(manager)
        _place_by_manager(models, manager)
        _sources_by_manager(models, manager)
    if search is not None:
        found.notes += search.apply(models)
    return Report([w.path for w in workflows], sorted(found.core), dict(sorted(found.packs.items())),
                  dict(sorted(models.items())), dict(sorted(found.unresolved.items())),
                  dict(sorted(found.ambiguous.items())), sorted(set(found.notes)))


def _decide_classes(wf: Workflow, nodemap: nodemap_mod.NodeMap, found: _Decisions) -> None:
    """Each node's class decided by `nodemap` (with the workflow's `extra.node_versions` to break ties), filed as
    built in, a pack's, or open (unresolved, ambiguous)."""
    saved = frozenset(k.lower() for k in wf.node_versions) - {nodemap_mod.CORE_PACK}
    for u in wf.nodes:
        r = nodemap.decide(u.class_type, u.cnr_id, u.aux_id, u.ver, saved=saved)
        active = u.mode not in ("muted", "bypassed")
        if r.status == "core":
            found.core.add(u.class_type)
        elif r.status == "pack" and r.pack is not None:
            _add_to_pack(found, u.class_type, r, r.pack, active)
        elif r.status in ("unresolved", "ambiguous"):
            _add_open(found.unresolved if r.status == "unresolved" else found.ambiguous, wf.path, u.class_type, r, active)


def _add_to_pack(found: _Decisions, class_type: str, r: nodemap_mod.ClassResult, p: nodemap_mod.Pack,
                 active: bool) -> None:
    """A class decided for pack `p`: the pack's entry gains the class, its URL and version, and why (a pick where
    others were possible is also a note)."""
    cur = found.packs.setdefault(p.name, {"name": p.name, "url": p.url, "registry_id": p.registry_id,
                                          "version": p.version, "via": r.via, "classes": [], "active": False})
    cur["url"] = cur["url"] or p.url
    _merge_version(cur, p, found.notes)
    if class_type not in cur["classes"]:
        cur["classes"].append(class_type)
    cur["active"] = cur["active"] or active
    if r.why and class_type not in cur.setdefault("evidence", {}):  # every pick says why
        cur["evidence"][class_type] = r.why
        if r.candidates or r.via in ("manager-pattern", "node_versions"):  # others were possible
            found.notes.append(f"class {class_type}: picked {p.name}: {r.why}")


def _merge_version(cur: dict[str, Any], p: nodemap_mod.Pack, notes: list[str]) -> None:
    """Workflows saved with different versions of a pack ask for the newest (latest), saying so, unless the user
    named the pack (overrides.json, --choose); else the first version saved is kept."""
    if p.version and cur["version"] and p.version != cur["version"] and cur["via"] not in ("override", "choice"):
        notes.append(f"node {p.name}: workflows were saved with different versions "
                     f"({cur['version']}, {p.version}); asking for the newest (latest)")
        cur["version"] = None
        cur["conflict"] = True
    elif p.version and not cur["version"] and not cur.get("conflict"):
        cur["version"] = p.version


def _add_open(target: dict[str, dict[str, Any]], workflow: str, class_type: str, r: nodemap_mod.ClassResult,
              active: bool) -> None:
    """A class nothing decided (unresolved, or a tie): listed once with the first why and candidates, and every
    workflow that uses it; active when any use is."""
    e = target.setdefault(class_type, {"why": r.why, "candidates": r.candidates, "workflows": [], "active": False})
    if workflow not in e["workflows"]:
        e["workflows"].append(workflow)
    e["active"] = e["active"] or active


def _collect_models(workflows: list[Workflow], model_inputs: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, Any]]:
    """Every model the workflows use, by lock key, with who uses it, whether it is demanded, and the source the
    workflow itself gives (its first, by file name or base name)."""
    models: dict[str, dict[str, Any]] = {}
    for wf in workflows:
        srcs: dict[str, ModelSource] = {}
        for s in wf.sources:
            srcs.setdefault(s.name, s)
            srcs.setdefault(_base(s.name), s)
        for m in model_uses(wf, model_inputs):
            src = srcs.get(m.name) or srcs.get(_base(m.name))
            slot = _model_slot(m, src)
            e = models.setdefault(slot.key, {"folder": slot.folder, "name": slot.name, "used_by": [], "active": False})
            e["used_by"].append(f"{m.workflow}#{m.node_id} {m.class_type}.{m.input or '?'}")
            _mark_optional(e, m)
            if src and src.url and "url" not in e:
                e["url"] = src.url
                e["source"] = "workflow"
            if src and src.sha256 and "sha256" not in e:
                e["sha256"] = src.sha256
    return models


def _model_slot(m: ModelUse, src: ModelSource | None) -> _Slot:
    """The folder the loader really lists (the input's, else the workflow's source's) and the file name there;
    `?/<name>` where neither tells."""
    folder = m.folder or (src.folder if src else None)
    folder = placement.loader_folder(folder) if folder else None
    if not folder:
        return _Slot(f"?/{m.name}", folder, m.name.replace("\\", "/"))
    name = placement.file_name(folder, m.name)
    return _Slot(model_key(folder, name), folder, name)


def _mark_optional(e: dict[str, Any], m: ModelUse) -> None:
    """A model only nodes ComfyUI will not run use (bypassed, muted, unconnected) is optional: not demanded; one
    active use makes it demanded."""
    e["active"] = e["active"] or m.optional is None
    if e["active"]:
        e.pop("optional", None)
    else:
        e.setdefault("optional", m.optional)


def _manager_missing(manager: nodemap_mod.ManagerData) -> list[str]:
    """The note that ComfyUI-Manager's data was not found, so classes and models were looked up in fewer places."""
    if manager.found:
        return []
    return ["no ComfyUI-Manager data was found (its extension-node-map.json, custom-node-list.json, "
            "model-list.json): classes and models are only looked up in the workflow, the locked sources "
            "and the Comfy Registry; set COMFYVER_MANAGER_DATA to a folder holding them"]


def _sources_by_manager(models: dict[str, dict[str, Any]], manager: nodemap_mod.ManagerData) -> None:
    """A model the workflow gives no URL for takes ComfyUI-Manager's model list's, if it has exactly one; several
    are listed as candidates, never picked."""
    for e in models.values():
        if "url" not in e:
            hits = manager.model_sources(e["name"], e["folder"])
            if len(hits) == 1:
                e["url"] = hits[0]["url"]
                e["source"] = "comfyui-manager model-list"
            elif hits:
                e["candidates"] = [f"{h['url']} ({h.get('name') or h.get('type')})" for h in hits]
