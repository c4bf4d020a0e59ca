"""Class name -> node pack: the evidence and the decision.

Evidence, strongest first:
1. the user: `choices` in the lock (class -> node name) and versions/<id>/overrides.json
   (`{"classes": {class: node spec}}`); a class provided by a node already in the lock;
2. the workflow itself: `properties.cnr_id` (registry id, `comfy-core` = built in) and
   `properties.aux_id` (`owner/repo` on GitHub), with `ver`;
3. the locked ComfyUI core: classes scanned from its source (`NODE_CLASS_MAPPINGS` and the
   newer `io.Schema(node_id=...)` entrypoint style), cached per commit;
4. ComfyUI-Manager's extension-node-map.json: among several candidates the workflow's `extra.node_versions`
   first, a unique exact name (beating another pack's looser `nodename_pattern` unless the class carries that
   pack's own name), `preemptions` (a pack that claims a class wins over others that also list it), then
   `nodename_pattern` (docs/lock.md has the order);
5. the Comfy Registry: `GET /comfy-nodes/{name}/node`.
A class that several packs provide, with nothing to decide between them, is reported as
ambiguous with its candidates; it is never picked silently.

The scans themselves (classes and their model inputs, read from the locked sources) are nodesource's;
`for_lock` puts them together for one version.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

from comfyver.base import project, web
from comfyver.base.errors import ComfyverError, Reason, UsageError
from comfyver.base.lockfile import GitOriginal, Lock, Node, NodeOriginal
from comfyver.lock import nodescan, nodesource, placement, probe
from comfyver.lock.nodesource import SCAN_VERSION, scan_locked, scan_tree, scan_tree_full  # noqa: F401 - callers outside the stage
from comfyver.sources import gitsource

CORE_PACK = "comfy-core"
CORE_URLS = {"https://github.com/comfyanonymous/comfyui", "https://github.com/comfy-org/comfyui"}
HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
# classes the frontend draws and runs itself: never a pack's
VIRTUAL_CLASSES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Comfy.GroupNode"}


# ---------------------------------------------------------------- ComfyUI-Manager data

def manager_dir() -> Path:
    env = os.environ.get("COMFYVER_MANAGER_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for d in here.parents:
        cand = d.parent / "shared" / "data" / "comfyui-manager"
        if (d / "scripts" / "comfyver").is_dir() and cand.is_dir():
            return cand
    return project.cache_dir() / "comfyui-manager"


def norm_url(url: str) -> str:
    u = url.strip().rstrip("/")
    if u.endswith(".git"):
        u = u[:-4]
    return u.lower()


@dataclass
class ManagerData:
    exact: dict[str, list[str]] = field(default_factory=dict)        # class -> [repo url]
    patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    preempt: dict[str, list[str]] = field(default_factory=dict)      # class -> [repo url]
    urls: dict[str, str] = field(default_factory=dict)               # registry id -> repo url
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # file name -> model-list entries
    basenames: dict[str, list[str]] = field(default_factory=dict)    # lower repo name -> [repo url]
    found: bool = False                                              # any data was read
    by_url: dict[str, set[str]] = field(default_factory=dict)        # repo url -> classes it lists

    def pattern_owners(self, class_type: str) -> list[str]:
        return sorted({u for rx, u in self.patterns if rx.search(class_type)})

    def url_for_id(self, registry_id: str) -> str | None:
        """The repository of a registry id: the node list's id, else a unique repo of that name."""
        if registry_id in self.urls:
            return self.urls[registry_id]
        hits = self.basenames.get(registry_id.lower(), [])
        return hits[0] if len(hits) == 1 else None

    @classmethod
    def load(cls, where: Path | None = None) -> ManagerData:
        d = Path(where) if where else manager_dir()
        m = cls()
        ext = _read_json(d / "extension-node-map.json")
        for url, entry in (ext or {}).items():
            if not (isinstance(entry, list) and len(entry) == 2):
                continue
            names, meta = entry
            for n in names or []:
                m.exact.setdefault(n, []).append(url)
                m.by_url.setdefault(url, set()).add(n)
            meta = meta if isinstance(meta, dict) else {}
            for n in meta.get("preemptions") or []:
                m.preempt.setdefault(n, []).append(url)
            pat = meta.get("nodename_pattern")
            if pat:
                try:
                    m.patterns.append((re.compile(pat), url))
                except re.error:
                    pass
        for c in (_read_json(d / "custom-node-list.json") or {}).get("custom_nodes", []):
            if isinstance(c, dict) and c.get("id") and isinstance(c.get("reference"), str):
                m.urls.setdefault(c["id"], c["reference"])
            if isinstance(c, dict) and isinstance(c.get("reference"), str) and "github.com/" in c["reference"]:
                m.basenames.setdefault(pack_name_for_url(c["reference"]), []).append(c["reference"])
        for e in (_read_json(d / "model-list.json") or {}).get("models", []):
            if isinstance(e, dict) and e.get("filename") and e.get("url"):
                m.models.setdefault(e["filename"], []).append(e)
        m.found = any(x for x in (ext, m.urls, m.models))
        return m

    def model_sources(self, name: str, folder: str | None) -> list[dict[str, Any]]:
        """Model-list entries for a file name, narrowed to the folder where it is known; one per URL."""
        hits = self.models.get(name.replace("\\", "/").rsplit("/", 1)[-1], [])
        if folder is not None:
            hits = [e for e in hits if manager_folder(e) == folder
                    or folder in placement.manager_folders(str(e.get("save_path") or ""))]
        return list({e["url"]: e for e in hits}.values())


# ComfyUI-Manager's model-list `type` -> models/ folder, for entries whose save_path is "default"
MANAGER_TYPE_FOLDERS = {"checkpoint": "checkpoints", "checkpoints": "checkpoints", "lora": "loras", "vae": "vae",
                        "upscale": "upscale_models", "controlnet": "controlnet", "t2i-adapter": "controlnet",
                        "clip": "text_encoders", "clip_vision": "clip_vision", "embedding": "embeddings",
                        "embeddings": "embeddings", "unet": "diffusion_models", "diffusion_model": "diffusion_models",
                        "gligen": "gligen", "taesd": "vae_approx", "unclip": "checkpoints"}


def manager_folder(entry: dict[str, Any]) -> str | None:
    """The models/ folder a model-list entry installs into (first part of save_path, legacy names mapped)."""
    save = str(entry.get("save_path") or "default").strip("/")
    if save == "default":
        return MANAGER_TYPE_FOLDERS.get(str(entry.get("type", "")).lower())
    first = save.split("/", 1)[0]
    return nodescan.LEGACY_FOLDERS.get(first, first)


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ComfyverError(f"{p}: not valid JSON ({exc})", hint="set COMFYVER_MANAGER_DATA to a folder with "
                            "ComfyUI-Manager's extension-node-map.json, custom-node-list.json, model-list.json") from None


@lru_cache(maxsize=4)
def manager(where: str | None = None) -> ManagerData:
    return ManagerData.load(Path(where) if where else None)


# ---------------------------------------------------------------- Comfy Registry

class RegistryHit(TypedDict):
    """The pack the Comfy Registry names for a class."""
    id: str
    repository: str | None


_registry_cache: dict[str, RegistryHit | None] = {}
_registry_down: list[ComfyverError] = []  # set by the first lookup that could not reach the registry


def registry_lookup(class_name: str) -> RegistryHit | None:
    """`GET /comfy-nodes/{name}/node` -> {"id", "repository"} of the pack, None if unknown (404)."""
    if class_name in _registry_cache:
        return _registry_cache[class_name]
    if _registry_down:  # asked once already and it could not be reached: do not wait again per class
        raise _registry_down[0]
    url = f"{web.registry_endpoint()}/comfy-nodes/{quote(class_name, safe='')}/node"
    try:
        status, data = web.get_json(url, what=f"node class {class_name!r}", allow=(404,))
    except web.TransientError as exc:
        reason = "no connection" if exc.reason is Reason.UNREACHABLE else exc.message.rsplit(": ", 1)[-1][:80]
        _registry_down.append(ComfyverError(f"the Comfy Registry at {web.registry_endpoint()} cannot be reached "
                                            f"({reason}; asked once for this run)"))
        raise _registry_down[0] from None
    found: RegistryHit | None = None
    if status == 200 and isinstance(data, dict) and data.get("id"):
        found = {"id": str(data["id"]), "repository": data.get("repository") or None}
    _registry_cache[class_name] = found
    return found


# ---------------------------------------------------------------- the decision

@dataclass(frozen=True)
class Pack:
    """A node pack as a dependency: its lock name and where it comes from."""
    name: str
    url: str | None = None          # git repository
    registry_id: str | None = None
    version: str | None = None      # ref / registry version asked for (None = latest)

    def original(self) -> NodeOriginal:
        if self.url:
            o: GitOriginal = {"type": "git", "url": self.url}
            if self.version:
                o["ref"] = self.version
            return o
        return {"type": "registry", "id": self.registry_id or self.name, "version": self.version or "latest"}


@dataclass
class ClassResult:
    class_type: str
    status: str                     # core | pack | ambiguous | unresolved | virtual
    via: str = ""                   # which evidence decided
    pack: Pack | None = None
    candidates: list[str] = field(default_factory=list)
    why: str = ""


@dataclass(frozen=True)
class NodeEvidence:
    """What one workflow node says about its class: the class, its properties' cnr_id / aux_id / ver, and the
    lowercased keys of its workflow's `extra.node_versions`."""
    class_type: str
    cnr_id: str | None = None
    aux_id: str | None = None
    ver: str | None = None
    saved: Collection[str] = frozenset()

    @property
    def at_ver(self) -> str:
        return f" at {self.ver}" if self.ver else ""


@dataclass(frozen=True)
class ManagerListing:
    """ComfyUI-Manager's candidates for one class, ComfyUI's own repository set apart (the core is no pack)."""
    exact: list[str]        # packs whose extension-node-map entry lists the class, in the map's order
    owners: list[str]       # packs whose nodename_pattern matches it
    core: bool              # ComfyUI's repository lists it

    @property
    def candidates(self) -> list[str]:
        return list(dict.fromkeys(self.exact + self.owners))

    @property
    def others(self) -> list[str]:
        """Pattern owners besides the one exact lister: claims looser than its exact listing."""
        return [u for u in self.owners if self.exact and norm_url(u) != norm_url(self.exact[0])]


def pack_name_for_url(url: str) -> str:
    """A node's lock name from its repository: the repository name, lowercased (the registry's convention)."""
    return gitsource.node_name_for_url(url) or "node"  # the one rule, shared with `--node URL`


class NodeMap:
    """Decides class -> pack for one version (core scan, lock, user input, manager data, registry)."""

    def __init__(self, *, core_classes: dict[str, list[tuple[str, str]]] | None = None,
                 locked_nodes: dict[str, Node] | None = None, choices: dict[str, str] | None = None,
                 overrides: dict[str, Pack] | None = None, manager_data: ManagerData | None = None,
                 registry: bool = False) -> None:
        self.core = core_classes            # None: no core scan (fall back to manager's ComfyUI entry)
        self.locked: dict[str, list[str]] = {}  # class -> [node name]
        self.locked_urls: dict[str, str] = {}   # node name -> url
        for name, n in (locked_nodes or {}).items():
            for c in n.get("provides") or []:
                self.locked.setdefault(c, []).append(name)
            o = n["original"]
            url = (o["url"] if o["type"] == "git" else None) or n["locked"]["url"]
            if url:
                self.locked_urls[name] = url
        self.choices = choices or {}
        self.overrides = overrides or {}    # class -> Pack
        self.mgr = manager_data if manager_data is not None else manager()
        self.registry = registry

    def _patterns_of(self, url: str, class_type: str) -> str:
        return " ".join(repr(rx.pattern) for rx, u in self.mgr.patterns if u == url and rx.search(class_type))

    def _url_pack(self, url: str, version: str | None = None) -> Pack:
        for name, u in self.locked_urls.items():
            if norm_url(u) == norm_url(url):
                return Pack(name, u, None, version)
        return Pack(pack_name_for_url(url), url, None, version)

    def _saved_pick(self, urls: list[str], saved: Collection[str]) -> str | None:
        """The one candidate repository the workflow's `extra.node_versions` names (by registry id or repository
        name), if exactly one is named."""
        ids = {norm_url(u): i.lower() for i, u in self.mgr.urls.items()}
        hits = [u for u in dict.fromkeys(urls)
                if pack_name_for_url(u) in saved or ids.get(norm_url(u), "\0") in saved]
        return hits[0] if len(hits) == 1 else None

    def _named(self, urls: list[str]) -> list[str]:
        """Candidates as the report lists them: "<lock name> <url>" (the name the lock would give each)."""
        return [self._url_pack(u).name + " " + u for u in urls]

    def _listing(self, class_type: str) -> ManagerListing:
        """ComfyUI-Manager's exact listers and pattern owners of a class, ComfyUI's own repository set apart."""
        urls = self.mgr.exact.get(class_type, [])
        return ManagerListing(exact=[u for u in urls if norm_url(u) not in CORE_URLS],
                              owners=[u for u in self.mgr.pattern_owners(class_type) if norm_url(u) not in CORE_URLS],
                              core=any(norm_url(u) in CORE_URLS for u in urls))

    def decide(self, class_type: str, cnr_id: str | None = None, aux_id: str | None = None,
               ver: str | None = None, saved: Collection[str] = frozenset()) -> ClassResult:
        """Which pack provides `class_type`, and the evidence (`why`): the first step that decides, in the order
        docs/lock.md gives. `saved`: the lowercased keys of the workflow's `extra.node_versions`, which break a tie
        among ComfyUI-Manager's candidates."""
        node = NodeEvidence(class_type, cnr_id, aux_id, ver, saved)
        # what you gave (overrides.json, --choose, the lock, the locked core), then the node's own properties
        for step in (self._frontend, self._override, self._choice, self._locked, self._core_scan,
                     self._core_cnr_id, self._aux_id, self._cnr_id):
            if (found := step(node)) is not None:
                return found
        # ComfyUI-Manager's node map: the workflow's extra.node_versions among its candidates first
        listing = self._listing(class_type)
        for listed in (self._listed_core, self._node_versions, self._several_listers, self._bundle_copy,
                       self._unique_lister):
            if (found := listed(node, listing)) is not None:
                return found
        # name patterns, then the Comfy Registry; else nothing decides
        return self._name_patterns(node) or self._registry(node) or self._unresolved(node)

    def _frontend(self, node: NodeEvidence) -> ClassResult | None:
        """A class the frontend draws and runs itself (a note, a reroute) is no pack's: it needs nothing."""
        return ClassResult(node.class_type, "virtual", "frontend") if node.class_type in VIRTUAL_CLASSES else None

    def _override(self, node: NodeEvidence) -> ClassResult | None:
        """versions/<id>/overrides.json names the pack: the user's file beats every other evidence."""
        if node.class_type not in self.overrides:
            return None
        return ClassResult(node.class_type, "pack", "override", self.overrides[node.class_type],
                           why="versions/<id>/overrides.json names it")

    def _choice(self, node: NodeEvidence) -> ClassResult | None:
        """`--choose C=N`: N, a locked node or a pack that lists C or whose pattern matches it; else unresolved."""
        if node.class_type not in self.choices:
            return None
        c, name = node.class_type, self.choices[node.class_type]
        url = self.locked_urls.get(name) or next(
            (u for u in self.mgr.exact.get(c, []) + self.mgr.pattern_owners(c) if pack_name_for_url(u) == name), None)
        if url is None and name not in self.locked_urls:
            return ClassResult(c, "unresolved", "choice",
                               why=f"the choice {name!r} is neither a locked node nor a known provider of it")
        return ClassResult(c, "pack", "choice", Pack(name, url), why=f"chosen: {name} (--choose)")

    def _locked(self, node: NodeEvidence) -> ClassResult | None:
        """A class one locked node provides is that node's; several locked providers are a tie for the user."""
        names = self.locked.get(node.class_type, [])
        if len(names) == 1:
            return ClassResult(node.class_type, "pack", "lock", Pack(names[0], self.locked_urls.get(names[0])),
                               why=f"the locked node {names[0]} provides it")
        if len(names) > 1:
            return ClassResult(node.class_type, "ambiguous", "lock", candidates=sorted(names),
                               why="several locked nodes provide it")
        return None

    def _core_scan(self, node: NodeEvidence) -> ClassResult | None:
        """A class the locked core's source registers is built in."""
        if self.core is None or node.class_type not in self.core:
            return None
        return ClassResult(node.class_type, "core", "core-scan")

    def _core_cnr_id(self, node: NodeEvidence) -> ClassResult | None:
        """`cnr_id: comfy-core` is built in; where the locked core was scanned and lacks it, a newer core's: unresolved."""
        if node.cnr_id != CORE_PACK:
            return None
        if self.core is None:
            return ClassResult(node.class_type, "core", "cnr_id")
        return ClassResult(node.class_type, "unresolved", "cnr_id",
                           why=f"built into ComfyUI {node.ver or '(newer)'} but not in the locked core", candidates=[])

    def _aux_id(self, node: NodeEvidence) -> ClassResult | None:
        """`aux_id: owner/repo`: that GitHub repository (the lock's node of that URL if there is one), at `ver`."""
        url = aux_id_url(node.aux_id)
        if url is None:
            return None
        return ClassResult(node.class_type, "pack", "aux_id", self._url_pack(url, node.ver),
                           why=f"the workflow's node says aux_id {node.aux_id}" + node.at_ver)

    def _cnr_id(self, node: NodeEvidence) -> ClassResult | None:
        """`cnr_id: <registry id>`: that pack, at the saved version (cnr_pack says from where)."""
        if not (node.cnr_id and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", node.cnr_id)):
            return None
        return ClassResult(node.class_type, "pack", "cnr_id", cnr_pack(node.cnr_id, node.ver, self.mgr.url_for_id(node.cnr_id)),
                           why=f"the workflow's node says cnr_id {node.cnr_id}" + node.at_ver)

    def _listed_core(self, node: NodeEvidence, listing: ManagerListing) -> ClassResult | None:
        """ComfyUI's own repository lists it and no core was scanned: built in, on the node map's word."""
        return ClassResult(node.class_type, "core", "manager") if listing.core and self.core is None else None

    def _node_versions(self, node: NodeEvidence, listing: ManagerListing) -> ClassResult | None:
        """Several candidates, and the workflow's extra.node_versions names exactly one: the workflow's own evidence."""
        cands = listing.candidates
        if not (len(cands) > 1 and (hit := self._saved_pick(cands, node.saved))):
            return None
        return ClassResult(node.class_type, "pack", "node_versions", self._url_pack(hit), candidates=self._named(cands),
                           why=f"the workflow's extra.node_versions names {self._url_pack(hit).name}, one of "
                               f"{len(cands)} candidates")

    def _several_listers(self, node: NodeEvidence, listing: ManagerListing) -> ClassResult | None:
        """Several packs list it exactly: the one that claims it (preemptions) wins, else a tie for the user."""
        urls = listing.exact
        if len(urls) <= 1:
            return None
        pre = preempting(urls, self.mgr.preempt.get(node.class_type, []))
        if pre is not None:
            return ClassResult(node.class_type, "pack", "manager-preemption", self._url_pack(pre),
                               candidates=self._named(urls),
                               why=f"{len(urls)} packs in ComfyUI-Manager's node map list it; "
                                   f"{self._url_pack(pre).name} claims it (preemptions)")
        return ClassResult(node.class_type, "ambiguous", "manager", candidates=self._named(urls),
                           why=f"{len(urls)} packs in ComfyUI-Manager's node map provide it")

    def _bundle_copy(self, node: NodeEvidence, listing: ManagerListing) -> ClassResult | None:
        """One pack lists it, but it carries the name of another whose pattern matches it (`Seed (rgthree)`): a
        bundle's copy, so the pattern's owner wins."""
        urls, others, c = listing.exact, listing.others, node.class_type
        if not (len(urls) == 1 and len(others) == 1 and carries_name(others[0], c) and not carries_name(urls[0], c)):
            return None
        return ClassResult(c, "pack", "manager-pattern", self._url_pack(others[0]), candidates=self._named(urls + others),
                           why=f"its name carries {self._url_pack(others[0]).name}'s name and matches its pattern "
                               f"{self._patterns_of(others[0], c)} (the owner), although {urls[0]} also lists it (a bundle)")

    def _unique_lister(self, node: NodeEvidence, listing: ManagerListing) -> ClassResult | None:
        """Exactly one pack lists it: that one (a unique exact match beats other packs' looser name patterns)."""
        urls, others, c = listing.exact, listing.others, node.class_type
        if len(urls) != 1:
            return None
        beats = ("; it beats the looser name pattern(s) "
                 + ", ".join(f"{self._patterns_of(u, c)} of {self._url_pack(u).name}" for u in others)) if others else ""
        return ClassResult(c, "pack", "manager", self._url_pack(urls[0]),
                           candidates=self._named(urls + others) if others else [],
                           why=f"ComfyUI-Manager's node map lists it for {self._url_pack(urls[0]).name} only "
                               f"(a unique exact match{beats})")

    def _name_patterns(self, node: NodeEvidence) -> ClassResult | None:
        """No pack lists it: the one pack whose nodename_pattern matches it; several patterns are a tie."""
        pats = [u for rx, u in self.mgr.patterns if rx.search(node.class_type)]
        if len(set(pats)) == 1:
            return ClassResult(node.class_type, "pack", "manager-pattern", self._url_pack(pats[0]),
                               why=f"its name matches only {self._url_pack(pats[0]).name}'s name pattern "
                                   f"{self._patterns_of(pats[0], node.class_type)} (no pack lists it exactly)")
        if len(set(pats)) > 1:
            return ClassResult(node.class_type, "ambiguous", "manager-pattern",
                               candidates=sorted({self._url_pack(u).name + " " + u for u in pats}),
                               why="several packs' name patterns match it")
        return None

    def _registry(self, node: NodeEvidence) -> ClassResult | None:
        """The Comfy Registry's pack for the class (only when asked to look there); a failed lookup says so."""
        if not self.registry:
            return None
        try:
            reg = registry_lookup(node.class_type)
        except ComfyverError as exc:
            return ClassResult(node.class_type, "unresolved", why=f"Comfy Registry lookup failed: {exc.message}")
        if not reg:
            return None
        url = self._url_pack(reg["repository"]).url if reg["repository"] else None
        return ClassResult(node.class_type, "pack", "registry", Pack(reg["id"].lower(), url, reg["id"]),
                           why=f"the Comfy Registry says {reg['id']} provides it")

    def _unresolved(self, node: NodeEvidence) -> ClassResult:
        """Nothing decided: unresolved, naming where it was looked for."""
        where = "the locked core, ComfyUI-Manager's node map" + (" or the Comfy Registry" if self.registry else "")
        return ClassResult(node.class_type, "unresolved", why=f"no pack found in the workflow's metadata, {where}")


def aux_id_url(aux_id: str | None) -> str | None:
    """The GitHub repository a node's `aux_id` names (`owner/repo`); None for anything else (a path, `..`)."""
    if (aux_id and re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", aux_id)
            and not set(aux_id.split("/")) & {".", ".."}):
        return f"https://github.com/{aux_id}"
    return None


def cnr_pack(cnr_id: str, ver: str | None, url: str | None) -> Pack:
    """The pack a node's `cnr_id` names: a release version comes from the registry; a commit (or no version) from
    the pack's repository where it is known; else the registry's latest."""
    if ver and not HEX40.match(ver):
        return Pack(cnr_id.lower(), None, cnr_id, ver)
    if url:
        return Pack(cnr_id.lower(), url, cnr_id, ver)
    return Pack(cnr_id.lower(), None, cnr_id, None)


def preempting(listers: list[str], claimers: list[str]) -> str | None:
    """The one pack whose `preemptions` claim a class (claimers that also list it first); None unless exactly one."""
    pre = [u for u in claimers if u in listers] or claimers
    return pre[0] if len(pre) == 1 else None


# words too common to say a class belongs to a pack whose name is only that word (ComfyUI-Image, comfy-utils)
GENERIC_NAMES = {"image", "images", "text", "util", "utils", "tool", "tools", "video", "audio", "mask", "masks",
                 "latent", "model", "models", "extra", "extras", "essentials", "math", "logic", "easy", "plus", "api",
                 "basic", "core", "custom", "loader", "loaders", "prompt", "sampler", "samplers", "node"}


def carries_name(url: str, class_type: str) -> bool:
    """The class's name carries the pack's own name (`ApplyInstantID` and `ComfyUI_InstantID`): the pack owns it."""
    n = _core_name(url)
    return len(n) >= 4 and n not in GENERIC_NAMES and n in re.sub(r"[^a-z0-9]", "", class_type.lower())


def _core_name(url: str) -> str:
    """A repository name without the words every pack carries: `ComfyUI_InstantID` -> `instantid`."""
    n = pack_name_for_url(url)
    for w in ("comfyui", "comfy", "custom", "nodes", "node", "suite", "pack"):
        n = n.replace(w, "")
    return re.sub(r"[^a-z0-9]", "", n)


def pick_by_evidence(class_type: str, candidates: list[str], used: set[str], decided: set[str],
                     mgr: ManagerData) -> tuple[str | None, str]:
    """Break a tie between packs (`candidates`: "name url" strings) with what the workflows show: a pack
    already decided for another class of them; the pack whose name is in the class's name (the owner, not a
    bundle that copies it); the pack that provides most of the workflows' classes. Returns (url, evidence)
    when one candidate wins outright, else (None, what was weighed)."""
    urls = [c.split(" ", 1)[1] for c in candidates if " " in c]
    if len(urls) < 2:
        return None, "no candidates with repositories to weigh"
    already = [u for u in urls if norm_url(u) in decided]
    if len(already) == 1:
        return already[0], f"{pack_name_for_url(already[0])} is already used for other classes of these workflows"
    owners = [u for u in urls if carries_name(u, class_type)]
    if len(owners) == 1:
        return owners[0], f"its name carries the pack's name ({pack_name_for_url(owners[0])}: the owner)"
    cover = {u: len(mgr.by_url.get(u, set()) & used) for u in urls}
    best = max(cover.values())
    top = [u for u, n in cover.items() if n == best]
    if len(top) == 1 and best > 1:
        others = ", ".join(f"{pack_name_for_url(u)} {n}" for u, n in sorted(cover.items(), key=lambda x: -x[1])[1:])
        return top[0], (f"{pack_name_for_url(top[0])} provides {best} of the workflows' classes "
                        f"(others: {others})")
    return None, "coverage " + ", ".join(f"{pack_name_for_url(u)} {n}" for u, n in cover.items())


def load_overrides(path: Path) -> dict[str, Pack]:
    """versions/<id>/overrides.json: {"classes": {"<class>": "<node spec>"}} -> class -> Pack."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ComfyverError(f"{path}: not valid JSON ({exc})") from None
    classes = data.get("classes", {}) if isinstance(data, dict) else None
    if not isinstance(classes, dict):
        raise ComfyverError(f"{path}: expected {{\"classes\": {{\"<class>\": \"<node spec>\"}}}}")
    return {c: pack_from_spec(s, f"{path}: classes[{c!r}]") for c, s in classes.items()}


def pack_from_spec(spec: str, what: str) -> Pack:
    """`https://host/o/repo[@ref]` or `registry-id[@version]` -> Pack (resolve.parse_node_spec when present)."""
    try:
        from comfyver.sources import resolve

        name, original = resolve.parse_node_spec(spec)
    except ImportError:
        name, original = _parse_spec_fallback(spec, what)
    if original["type"] == "git":
        return Pack(name, original["url"], None, original.get("ref"))
    if original["type"] != "registry":  # a spec names a git URL or a registry id, never a local folder
        raise UsageError(f"{what}: {spec!r} names no git URL or registry node")
    v = original["version"]
    return Pack(name, None, original["id"], None if v == "latest" else v)


def _parse_spec_fallback(spec: str, what: str) -> tuple[str, NodeOriginal]:
    from comfyver.sources import gitsource

    if "://" in spec:
        url, _, ref = spec.rpartition("@") if re.search(r"@[^/]+$", spec) else (spec, "", "")
        gitsource.check_url(url, what)
        o: GitOriginal = {"type": "git", "url": url}
        if ref:
            o["ref"] = gitsource.check_ref(ref, what)
        return pack_name_for_url(url), o
    rid, _, ver = spec.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", rid):
        raise ComfyverError(f"{what}: {spec!r} is neither a git URL nor a registry id", exit_code=2)
    return rid, {"type": "registry", "id": rid, "version": ver or "latest"}


def for_lock(lock: Lock, vdir: Path | None, *, registry: bool = False, scan_nodes: bool = True,
             manager_data: ManagerData | None = None) -> tuple[NodeMap, dict[str, list[tuple[str, str]]]]:
    """The NodeMap and class -> model inputs of a version: its locked core and nodes, scanned (a cached runtime
    probe of the same lock and uv.lock, when there is one, wins)."""
    core_l = lock["comfyui"]["locked"]
    core = scan_locked(core_l["url"], core_l["rev"], f"comfyui ({lock['id']})", core=True)
    model_inputs = dict(core)
    if scan_nodes:
        for name, n in lock.get("nodes", {}).items():
            found = nodesource.scan_locked_node_full(name, n["locked"])
            nodescan.resolve_inherited(found.classes, found.inherits, core)
            model_inputs.update(found.classes)
    probed = probe.cached(lock, (vdir / "uv.lock").read_bytes()) if vdir and (vdir / "uv.lock").is_file() else None
    if probed:  # the runtime probe of exactly this lock is the ground truth
        model_inputs.update(probe.model_inputs(probed))
    overrides = load_overrides(vdir / "overrides.json") if vdir else {}
    nm = NodeMap(core_classes=core, locked_nodes=lock.get("nodes"), choices=lock.get("choices"),
                 overrides=overrides, manager_data=manager_data, registry=registry)
    return nm, model_inputs
