"""The proof of a lock: every workflow checked against what ComfyUI (the runtime probe) or the static scan knows.

For every node ComfyUI will run (not muted, bypassed or connected to nothing; frontend-only nodes left out):
- its class is registered (probe knowledge only: the static scan's class coverage is `check`'s own);
- each model value of an input that lists `folder_paths` folders is among the options that input would offer:
  the lock's model keys under those folders (ComfyUI's legacy names mapped, a folder a pack aliases onto another
  one lists that one's files, `placement.loader_folder`; a pack folder `a_b` also lists models/a/b), named relative
  to the folder, with the loader's own
  prefix (Impact's `bbox/` + each file of ultralytics_bbox) where the probe saw one. What ComfyUI itself ships in
  a folder (models/configs) is out of scope: those folders are not checked.

Knowledge comes from the probe's result (`from_probe`: its `input_folders` (input -> [(prefix, folder)]) where the
probe recorded them, else its `model_inputs`) or from the static scan (`from_scan`: class -> [(input, folder)], no
prefix known: a value is then matched as `lock` places it, `placement.file_name`). `Knowledge.source` says which.
`prove` returns typed `ProofProblem`s, each naming the workflow, node, class, input, value, the folders the input
lists, the lock's closest model key and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from comfyver.lock import analyze, nodescan, placement

# folders ComfyUI ships files in (models/configs/*.yaml): their values are not the lock's to offer
CORE_SHIPPED = frozenset({"configs"})
# nodes that live only in the ComfyUI frontend, never registered
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})

Source = Literal["probe", "scan"]
Kind = Literal["class-not-registered", "model-not-offered", "input-not-connected"]


@dataclass(frozen=True)
class Knowledge:
    """What is known of the version's classes: registered classes (None: not known here) and, per class, each
    input that lists model folders with the (prefix, folder) pairs it lists (prefix None: not known)."""
    source: Source
    classes: frozenset[str] | None
    inputs: Mapping[str, Mapping[str, tuple[tuple[str | None, str], ...]]]
    links: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # class -> required inputs a link fills

    def model_inputs(self) -> dict[str, list[tuple[str, str]]]:
        """class -> [(input, first folder)] in declaration order, as analyze.model_uses takes it."""
        return {c: [(i, fs[0][1]) for i, fs in ins.items() if fs] for c, ins in self.inputs.items()}


def from_probe(result: Mapping[str, Any]) -> Knowledge:
    """The probe's knowledge (probe_main's result): registered classes, and each model input's folders."""
    inputs: dict[str, dict[str, tuple[tuple[str | None, str], ...]]] = {}
    for c, info in (result.get("classes") or {}).items():
        per: dict[str, tuple[tuple[str | None, str], ...]] = {}
        for name, folder in info.get("model_inputs") or []:
            per[name] = (("", folder),)  # an option that starts with the folder's own names: no prefix
        recorded = info.get("input_folders")
        if isinstance(recorded, dict):  # probes that record every (prefix, folder) an input lists
            per = {name: tuple((str(p), str(f)) for p, f in pairs) for name, pairs in recorded.items() if pairs}
        inputs[c] = per
    links = {c: tuple(str(x) for x in info.get("required_links") or [])
             for c, info in (result.get("classes") or {}).items() if info.get("required_links")}
    return Knowledge("probe", frozenset((result.get("classes") or {}).keys()), inputs, links)


def from_scan(model_inputs: Mapping[str, Iterable[tuple[str, str]]]) -> Knowledge:
    """The static scan's knowledge (nodemap.for_lock's class -> [(input, folder)]): no class set, no prefixes."""
    inputs: dict[str, dict[str, tuple[tuple[str | None, str], ...]]] = {}
    for c, pairs in model_inputs.items():
        per: dict[str, tuple[tuple[str | None, str], ...]] = {}
        for name, folder in pairs:
            per.setdefault(name, ((None, folder),))
        inputs[c] = per
    return Knowledge("scan", None, inputs)


@dataclass(frozen=True)
class ProofProblem:
    """A workflow node ComfyUI would refuse: its class not registered, or a model value its loader does not offer."""
    kind: Kind
    workflow: str
    node_id: str
    class_type: str
    input: str | None = None
    value: str | None = None
    folders: tuple[str, ...] = ()        # the folders the input lists
    closest: str | None = None           # the lock's model key closest to the value
    fix: str = ""

    @property
    def item(self) -> str:
        if self.kind == "class-not-registered":
            return f"class {self.class_type}"
        if self.kind == "input-not-connected":
            return f"input {self.class_type}.{self.input}"
        return f"model {self.value}"

    @property
    def problem(self) -> str:
        where = f"{self.workflow}#{self.node_id} {self.class_type}"
        if self.kind == "class-not-registered":
            return f"{where}: the class is not registered when ComfyUI loads the version's nodes"
        if self.kind == "input-not-connected":
            return (f"{where}: required input {self.input!r} has no link (ComfyUI refuses the prompt: "
                    "\"Required input is missing\")")
        held = f"the lock holds {self.closest}" if self.closest else "the lock holds no model of that name"
        return (f"{where}.{self.input}: {self.value!r} is not among the options of the input, which lists "
                f"{', '.join(self.folders)} ({held})")

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "problem": self.problem, "fix": self.fix, "kind": self.kind,
                "workflow": self.workflow, "node": self.node_id, "class": self.class_type, "input": self.input,
                "value": self.value, "folders": list(self.folders), "closest": self.closest}


def _lists(input_folder: str, key_folder: str) -> bool:
    """Whether an input listing `input_folder` finds the files of the lock's folder `key_folder` (models/<it>): a
    legacy name is the same folder; a folder a pack aliases onto another one is listed by none."""
    disk = nodescan.LEGACY_FOLDERS.get(key_folder, key_folder)
    if disk in placement.ALIASED_FOLDERS:
        return False
    return disk == placement.loader_folder(input_folder)


def options(model_keys: Iterable[str], pairs: Iterable[tuple[str | None, str]]) -> set[str]:
    """The values an input listing `pairs` ((prefix, folder)) would offer from the lock's model keys (prefix None:
    unknown, taken as none)."""
    out: set[str] = set()
    for prefix, folder in pairs:
        # a pack's folder that lives at models/<a>/<b> (Impact's ultralytics_bbox at models/ultralytics/bbox, the
        # Manager's save_path ultralytics/bbox) also finds a key under that path
        nested = folder.replace("_", "/") + "/" if "_" in folder else None
        for key in model_keys:
            kf, _, name = key.partition("/")
            if name and _lists(folder, kf):
                out.add((prefix or "") + name)
            elif nested and key.startswith(nested):
                out.add((prefix or "") + key[len(nested):])
    return out


def _offered(value: str, pairs: tuple[tuple[str | None, str], ...], model_keys: list[str]) -> bool:
    v = value.replace("\\", "/")
    if any(p is None for p, _ in pairs):  # the scan: matched as `lock` places it
        return any(placement.file_name(placement.loader_folder(f), v) in options(model_keys, [("", f)])
                   for _, f in pairs)
    return v in options(model_keys, pairs)


def _right_key(value: str, pairs: tuple[tuple[str | None, str], ...]) -> str:
    """The key the lock should hold for `value`: under the folder of the prefix it carries (else the first)."""
    v = value.replace("\\", "/")
    for prefix, folder in pairs:
        if prefix and v.startswith(prefix):
            return analyze.model_key(placement.loader_folder(folder), v[len(prefix):])
    folder = placement.loader_folder(pairs[0][1])
    return analyze.model_key(folder, placement.file_name(folder, v) if pairs[0][0] is None else v)


def closest_key(value: str, model_keys: list[str]) -> str | None:
    """The lock's model key nearest to `value`: one of the same file name first, else the most similar."""
    base = value.replace("\\", "/").rsplit("/", 1)[-1]
    same = [k for k in model_keys if k.rsplit("/", 1)[-1] == base]
    pool = same or model_keys
    hits = difflib.get_close_matches(value, pool, n=1, cutoff=0.0 if same else 0.6)
    return hits[0] if hits else None


def _model_fix(lock: Mapping[str, Any], right: str, closest: str | None) -> str:
    vid = lock.get("id", "<id>")
    url = (((lock.get("models") or {}).get(closest) or {}).get("original") or {}).get("url") if closest else None
    lever = f"comfyver lock {vid} --model '{right}={url or '<url>'}'"
    if closest:
        return f"lock it where the loader looks: {lever} (and remove models[{closest!r}] if nothing else uses it)"
    return f"lock it: {lever}"


def _unconnected(wf: analyze.Workflow, name: str, knowledge: Knowledge) -> list[ProofProblem]:
    """Required inputs only a link fills (the probe's `required_links`) that a node ComfyUI runs leaves empty. Nodes
    inside subgraphs and group nodes are not checked (their links cross the instance's boundary)."""
    out = []
    for u in wf.nodes:
        want = knowledge.links.get(u.class_type)
        if (not want or u.connected is None or ":" in u.node_id or u.virtual or u.mode in ("muted", "bypassed")
                or not u.linked or not u.feeds):
            continue
        for i in want:
            if i not in u.connected:
                out.append(ProofProblem("input-not-connected", name, u.node_id, u.class_type, i,
                                        fix=f"connect {u.class_type}.{i} in {name} (node {u.node_id}), or bypass "
                                            "the node"))
    return out


def prove(lock: Mapping[str, Any], workflows: Iterable[analyze.Workflow], knowledge: Knowledge,
          names: Mapping[str, str] | None = None) -> list[ProofProblem]:
    """Every node ComfyUI will run, against `knowledge`: the problems, in workflow order. `names`: a workflow's
    path -> the name a problem gives it (the version's workflows/<file>)."""
    model_keys = sorted(lock.get("models") or {})
    inputs = knowledge.model_inputs()
    # classes a locked pack registers in Python (its scan, or the probe where the pack loaded): never frontend-only
    claimed = {c for n in (lock.get("nodes") or {}).values() for c in n.get("provides") or []}
    out: list[ProofProblem] = []
    for wf in workflows:
        name = (names or {}).get(wf.path, wf.path)
        if knowledge.classes is not None:
            seen: set[str] = set()
            for u in wf.nodes:
                if (u.virtual or u.class_type in FRONTEND_ONLY or u.mode in ("muted", "bypassed")
                        or (not u.linked and u.class_type not in claimed)
                        or u.class_type in knowledge.classes or u.class_type in seen):
                    continue  # a node wired to nothing that no pack registers is a frontend-only (JS) node
                seen.add(u.class_type)
                out.append(ProofProblem("class-not-registered", name, u.node_id, u.class_type,
                                        fix="pin a revision of its pack that registers it (--node <url>@<ref>), "
                                            "choose another pack (--choose), or a newer ComfyUI for a core class"))
        out += _unconnected(wf, name, knowledge)
        for m in analyze.model_uses(wf, inputs):
            pairs = knowledge.inputs.get(m.class_type, {}).get(m.input or "")
            if m.optional is not None or not pairs or any(f in CORE_SHIPPED for _, f in pairs):
                continue
            if _offered(m.name, pairs, model_keys):
                continue
            near = closest_key(m.name, model_keys)
            right = _right_key(m.name, pairs)
            out.append(ProofProblem("model-not-offered", name, m.node_id, m.class_type, m.input, m.name,
                                    tuple(f for _, f in pairs), near, _model_fix(lock, right, near)))
    return out
