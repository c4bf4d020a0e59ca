"""Static scan of a node pack's (or ComfyUI core's) Python source: the classes it registers, each class's model
inputs, and what the scan could not follow. The fast path and the fallback when no environment is at hand;
the runtime probe (lock/probe.py) is the ground truth.

Registration forms followed, across all of the pack's files:
- `NODE_CLASS_MAPPINGS = {...}` (also annotated, `{**A, **B}` of other mapping dicts, `dict(...)`),
  `.update({...})`, `NODE_CLASS_MAPPINGS["id"] = Cls`;
- V3 / entrypoint style: `io.Schema(node_id="...")` and class constants (`node_id`, `NodeId`, `NODE_ID`);
- a value names a class defined in any file of the pack (a sub-module registered from `__init__.py`);
- a tuple target, `NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = helper(CONFIG)` (ComfyUI-KJNodes' form) or
  a tuple literal: the pack's own function evaluated over its config dict (`{"id": {"class": Cls}}` or
  `{"id": Cls}`, with its `.update({...})` calls) where it builds the dict by a comprehension or a loop over
  `.items()`; anything else in it is unfollowed.
A registration with a key or value it cannot read (a helper-computed name, a comprehension) is reported in
`unfollowed` (file:line and the source), never silently dropped.

Model inputs: an input whose options evaluate to `folder_paths.get_filename_list("<folder>")`, followed
through `["None"] + X`, comprehensions over X, `sorted(X)`/`list(X)`/`wrapper(X)`, local and module variables holding X,
helper methods and module functions returning X, and `for i in range(a, b)` loops that add f-string named
inputs. ComfyUI's legacy names are mapped as its folder_paths.map_legacy does (`clip` -> `text_encoders`,
`unet` -> `diffusion_models`). A class with no model inputs of its own inherits its base classes' (by name;
`inherits` lists the bases so a caller can resolve core loaders too).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
ID_CONSTANTS = ("node_id", "NodeId", "NODE_ID")
MAX_LOOP = 64


@dataclass
class Scan:
    classes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)   # id -> [(input, folder)]
    inherits: dict[str, list[str]] = field(default_factory=dict)              # id -> base class names
    unfollowed: list[str] = field(default_factory=list)                       # "file:line: source"

    def to_json(self) -> dict[str, Any]:
        return {"classes": self.classes, "inherits": self.inherits, "unfollowed": self.unfollowed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scan:
        return cls({k: [tuple(x) for x in v] for k, v in d["classes"].items()}, d.get("inherits", {}),
                   d.get("unfollowed", []))


def _folder(name: str) -> str:
    return LEGACY_FOLDERS.get(name, name)


class _Module:
    def __init__(self, path: str, tree: ast.Module):
        self.path, self.tree = path, tree
        self.classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        self.functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        self.returns: dict[int, str | None] = {}  # id(function) -> folder it returns (memo; None while in progress)
        self.env: dict[str, str] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                f = _Eval(self, None, {}).folder(stmt.value)
                for t in stmt.targets:
                    if isinstance(t, ast.Name) and f:
                        self.env[t.id] = f


class _Eval:
    """Folder of an expression that evaluates to a get_filename_list(...) result (None if it does not)."""

    def __init__(self, mod: _Module, cls: ast.ClassDef | None, local: dict[str, str], depth: int = 0):
        self.mod, self.cls, self.local, self.depth = mod, cls, local, depth

    def _callee(self, func: ast.expr) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        name = getattr(func, "attr", None) or getattr(func, "id", None)
        if self.cls is not None:
            for f in self.cls.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name == name:
                    return f
        return self.mod.functions.get(func.id) if isinstance(func, ast.Name) else None

    def returns(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
        if self.depth > 4:
            return None
        key = id(fn)
        if key in self.mod.returns:  # computed, or in progress (recursion): each function is evaluated once
            return self.mod.returns[key]
        self.mod.returns[key] = None
        sub = _Eval(self.mod, self.cls, {}, self.depth + 1)
        sub.local = sub.bind(fn.body)
        found = next((f for node in ast.walk(fn) if isinstance(node, ast.Return) and node.value is not None
                      and (f := sub.folder(node.value))), None)
        self.mod.returns[key] = found
        return found

    def bind(self, body: list[ast.stmt]) -> dict[str, str]:
        """name -> folder for `name = <folder expr>` anywhere in `body` (loops and branches included)."""
        local = dict(self.local)
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    self.local = local
                    if f := self.folder(node.value):
                        local[node.targets[0].id] = f
        self.local = local
        return local

    def folder(self, node: ast.expr) -> str | None:
        if self.depth > 8:  # class attributes referring to each other, helpers calling helpers
            return None
        if isinstance(node, ast.Call):
            fname = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if fname == "get_filename_list":
                arg = node.args[0] if node.args else None
                return _folder(arg.value) if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            fn = self._callee(node.func)
            found = self.returns(fn) if fn is not None else None
            # sorted(X), list(X), a pack's own wrapper (cleanprint(X)): the list passed through
            return found or next((f for f in map(self.folder, node.args) if f), None)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.folder(node.left) or self.folder(node.right)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            return next((f for f in (self.folder(g.iter) for g in node.generators) if f), None)
        if isinstance(node, (ast.List, ast.Tuple)):
            return next((f for f in (self.folder(e.value if isinstance(e, ast.Starred) else e) for e in node.elts)
                         if f), None)
        if isinstance(node, ast.Name):
            return self.local.get(node.id) or self.mod.env.get(node.id)
        if isinstance(node, ast.Attribute) and self.cls is not None and isinstance(node.value, ast.Name):
            for stmt in self.cls.body:  # a class attribute (cls.ckpts, s.models)
                if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == node.attr for t in stmt.targets)):
                    return _Eval(self.mod, self.cls, {}, self.depth + 1).folder(stmt.value)
        if isinstance(node, ast.IfExp):
            return self.folder(node.body) or self.folder(node.orelse)
        return None


def _const_int(node: ast.expr, local_ints: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return local_ints.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        a, b = _const_int(node.left, local_ints), _const_int(node.right, local_ints)
        if a is not None and b is not None:
            return a + b if isinstance(node.op, ast.Add) else a - b
    return None


def _key_names(key: ast.expr | None, loops: list[tuple[str, list[int]]]) -> list[str]:
    """An input's name(s): a constant, or an f-string over enclosing range() loop variables."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return [key.value]
    if isinstance(key, ast.JoinedStr) and loops:
        var, values = loops[-1]
        out = []
        for v in values:
            parts = []
            for p in key.values:
                if isinstance(p, ast.Constant):
                    parts.append(str(p.value))
                elif isinstance(p, ast.FormattedValue) and getattr(p.value, "id", None) == var:
                    parts.append(str(v))
                else:
                    return []
            out.append("".join(parts))
        return out
    return []


def _class_inputs(mod: _Module, cls: ast.ClassDef) -> list[tuple[str, str]]:
    found: list[tuple[int, int, int, str, str]] = []
    for fn in [f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        ev = _Eval(mod, cls, {})
        ev.bind(fn.body)
        ints: dict[str, int] = {}
        for node in ast.walk(fn):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and (n := _const_int(node.value, ints)) is not None):
                ints[node.targets[0].id] = n

        def visit(node: ast.AST, loops: list[tuple[str, list[int]]], ints: dict[str, int] = ints,
                  ev: _Eval = ev) -> None:  # this pass's names, bound (visit runs within the pass)
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Call) \
                    and getattr(node.iter.func, "id", None) == "range":
                bounds = [b for a in node.iter.args if (b := _const_int(a, ints)) is not None]
                if bounds and len(bounds) == len(node.iter.args) <= 2:
                    lo, hi = (0, bounds[0]) if len(bounds) == 1 else bounds
                    loops = [*loops, (node.target.id, list(range(lo, min(hi, lo + MAX_LOOP))))]
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(v, (ast.Tuple, ast.List)) and v.elts and (f := _spec_folder(ev, v)) and k is not None:
                        for i, name in enumerate(_key_names(k, loops)):
                            found.append((k.lineno, k.col_offset, i, name, f))
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
                t, v = node.targets[0], node.value
                if isinstance(v, (ast.Tuple, ast.List)) and v.elts and (f := _spec_folder(ev, v)):
                    for i, name in enumerate(_key_names(t.slice, loops)):
                        found.append((t.lineno, t.col_offset, i, name, f))
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str) and getattr(node.func, "attr", None) == "Input"):
                opts = [kw.value for kw in node.keywords if kw.arg == "options"] + list(node.args[1:2])
                if f := next((x for x in map(ev.folder, opts) if x), None):
                    found.append((node.lineno, node.col_offset, 0, node.args[0].value, f))
            for child in ast.iter_child_nodes(node):
                visit(child, loops)

        visit(fn, [])
    ev = _Eval(mod, cls, {})
    for stmt in cls.body:  # inputs kept in class attributes
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Dict):
                    for k, v in zip(node.keys, node.values):
                        if isinstance(v, (ast.Tuple, ast.List)) and v.elts and (f := _spec_folder(ev, v)) and k is not None:
                            for i, name in enumerate(_key_names(k, [])):
                                found.append((k.lineno, k.col_offset, i, name, f))
    found.sort()
    out, seen = [], set()
    for *_, name, folder in found:
        if name not in seen:
            seen.add(name)
            out.append((name, folder))
    return out


def _spec_folder(ev: _Eval, spec: ast.Tuple | ast.List) -> str | None:
    """The folder of an input spec tuple: its options (first element) or a V3-style `{"options": X}`."""
    f = ev.folder(spec.elts[0])
    if f is None and len(spec.elts) > 1 and isinstance(spec.elts[1], ast.Dict):
        for k, v in zip(spec.elts[1].keys, spec.elts[1].values):
            if isinstance(k, ast.Constant) and k.value == "options":
                f = ev.folder(v)
    return f


def _is_mapping(node: ast.AST) -> bool:
    return getattr(node, "id", None) == "NODE_CLASS_MAPPINGS" or getattr(node, "attr", None) == "NODE_CLASS_MAPPINGS"


def _mapping_slot(targets: list[ast.expr]) -> int | None:
    """The position of NODE_CLASS_MAPPINGS in a tuple target (`A, B = ...`): None if no tuple target names it,
    -1 if it is there but a starred name makes its value's position unknowable."""
    for t in targets:
        if isinstance(t, (ast.Tuple, ast.List)) and any(_is_mapping(e) for e in t.elts):
            if any(isinstance(e, ast.Starred) for e in t.elts):
                return -1
            return next(i for i, e in enumerate(t.elts) if _is_mapping(e))
    return None


Entries = list[tuple[str, str | None]]  # (class id, the name of the class registered under it)


class _TupleRegistration:
    """The mapping a tuple assignment gives NODE_CLASS_MAPPINGS: a tuple literal, or a call of the pack's own
    function that returns a tuple of dicts built from a config dict (`{k: v["class"] for k, v in cfg.items()}`,
    or a loop `m[k] = v["class"]`, keys optionally `f"{PREFIX}{k}"`). `entries` is None where any part cannot be
    evaluated: the caller lists it as unfollowed."""

    def __init__(self, mod: _Module, mods: list[_Module], dicts: dict[str, list[ast.Dict]]):
        self.mod, self.mods, self.dicts = mod, mods, dicts
        self.consts = {t.id: s.value.value for s in mod.tree.body if isinstance(s, ast.Assign)
                       and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)
                       for t in s.targets if isinstance(t, ast.Name)}

    def entries(self, value: ast.expr, slot: int) -> Entries | None:
        if isinstance(value, (ast.Tuple, ast.List)):
            if any(isinstance(e, ast.Starred) for e in value.elts) or slot >= len(value.elts):
                return None
            return self.plain(self.config(value.elts[slot], {}))
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
            return None
        fns = [f for f in [self.mod.functions.get(value.func.id)] if f] or [
            f for mm in self.mods if (f := mm.functions.get(value.func.id))]
        if len(fns) != 1 or any(isinstance(a, ast.Starred) for a in value.args):
            return None
        fn = fns[0]
        params = [a.arg for a in fn.args.args]
        bound: dict[str, ast.expr] = dict(zip(params, value.args))
        bound.update({kw.arg: kw.value for kw in value.keywords if kw.arg in params})
        rets = [r.value for r in _own_nodes(fn) if isinstance(r, ast.Return) and r.value is not None]
        out: Entries = []
        for r in rets:
            if not (isinstance(r, ast.Tuple) and slot < len(r.elts)) or any(isinstance(e, ast.Starred) for e in r.elts):
                return None
            got = self.built(fn, r.elts[slot], bound)
            if got is None:
                return None
            out += got
        return out if rets else None

    @staticmethod
    def plain(config: list[tuple[str, ast.expr]] | None) -> Entries | None:
        return None if config is None else [(k, _value_class(v)) for k, v in config]

    def config(self, node: ast.expr, bound: dict[str, ast.expr], depth: int = 0) -> list[tuple[str, ast.expr]] | None:
        """A dict's (constant key, value node) entries: a literal, or a module-level dict by name with its
        `.update({...})` calls and `NAME["k"] = v` assignments. None if a key is not a constant."""
        if depth > 4:
            return None
        if isinstance(node, ast.Name) and node.id in bound:
            return self.config(bound[node.id], {}, depth + 1)
        if isinstance(node, ast.Dict):
            out: list[tuple[str, ast.expr]] = []
            for k, v in zip(node.keys, node.values):
                if k is None:
                    more = self.config(v, {}, depth + 1)
                    if more is None:
                        return None
                    out += more
                elif isinstance(k, ast.Constant) and isinstance(k.value, str):
                    out.append((k.value, v))
                else:
                    return None
            return out
        if not (isinstance(node, ast.Name) and node.id in self.dicts):
            return None
        out = []
        for d in self.dicts[node.id]:
            more = self.config(d, {}, depth + 1)
            if more is None:
                return None
            out += more
        homes = [mm for mm in self.mods if mm is self.mod or any(
            isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in s.targets)
            for s in mm.tree.body)]
        for n in (n for mm in homes for n in ast.walk(mm.tree)):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update"
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == node.id):
                more = self.config(n.args[0], {}, depth + 1) if len(n.args) == 1 and not n.keywords else None
                if more is None:
                    return None
                out += more
            elif isinstance(n, ast.Assign):
                for t in n.targets:
                    if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == node.id:
                        if not (isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str)):
                            return None
                        out.append((t.slice.value, n.value))
        return out

    def built(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, node: ast.expr,
              bound: dict[str, ast.expr]) -> Entries | None:
        """The entries of a dict a function returns: a literal, a comprehension over `cfg.items()`, or a local
        dict filled in loops over `cfg.items()`."""
        if isinstance(node, ast.Dict):
            return self.plain(self.config(node, bound))
        if isinstance(node, ast.DictComp):
            if len(node.generators) != 1 or node.generators[0].ifs:
                return None
            return self.over(node.generators[0].target, node.generators[0].iter, node.key, node.value, bound)
        if not isinstance(node, ast.Name):
            return None
        out: Entries = []
        stores = [n for n in _own_nodes(fn) if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)
                  and isinstance(n.value, ast.Name) and n.value.id == node.id]
        seen = 0
        for n, loop in _assignments(fn.body, None):
            targets = n.targets if isinstance(n, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id == node.id:
                    if not (isinstance(n.value, ast.Dict) and not n.value.keys):
                        return None  # only `m = {}` starts the dict
                elif isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == node.id:
                    seen += 1
                    if loop is None:
                        got = self.plain(self.config(ast.Dict(keys=[t.slice], values=[n.value]), bound))
                    else:
                        got = self.over(loop.target, loop.iter, t.slice, n.value, bound)
                    if got is None:
                        return None
                    out += got
                elif any(isinstance(x, ast.Name) and x.id == node.id for x in ast.walk(t)):
                    return None
        if seen != len(stores):  # m[k] = ... where this reading does not reach (a match arm, a while loop)
            return None
        for x in _own_nodes(fn):  # m.update(...), m.setdefault(...): not followed
            if (isinstance(x, ast.Call) and isinstance(x.func, ast.Attribute) and isinstance(x.func.value, ast.Name)
                    and x.func.value.id == node.id):
                return None
        return out

    def over(self, target: ast.expr, it: ast.expr, key: ast.expr, value: ast.expr,
             bound: dict[str, ast.expr]) -> Entries | None:
        """`for K, V in CFG.items(): ... [key] = value`, evaluated for every entry of CFG."""
        if not (isinstance(target, ast.Tuple) and len(target.elts) == 2
                and all(isinstance(e, ast.Name) for e in target.elts)
                and isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr == "items"
                and not it.args):
            return None
        kname, vname = (e.id for e in target.elts if isinstance(e, ast.Name))
        cfg = self.config(it.func.value, bound)
        if cfg is None:
            return None
        out: Entries = []
        for k, v in cfg:
            cid = self.key(key, kname, k)
            if cid is None:
                return None
            out.append((cid, _class_of(value, vname, v)))
        return out

    def key(self, node: ast.expr, kname: str, k: str) -> str | None:
        if isinstance(node, ast.Name) and node.id == kname:
            return k
        if isinstance(node, ast.JoinedStr):
            parts = []
            for p in node.values:
                if isinstance(p, ast.Constant):
                    parts.append(str(p.value))
                elif (isinstance(p, ast.FormattedValue) and isinstance(p.value, ast.Name) and p.format_spec is None
                      and (p.value.id == kname or p.value.id in self.consts)):
                    parts.append(k if p.value.id == kname else self.consts[p.value.id])
                else:
                    return None
            return "".join(parts)
        return None


def _value_class(v: ast.expr) -> str | None:
    if isinstance(v, ast.Call) and not v.args and not v.keywords:  # rare: an instance
        v = v.func
    return getattr(v, "id", None) or getattr(v, "attr", None)


def _class_of(expr: ast.expr, vname: str, v: ast.expr) -> str | None:
    """The class `expr` (written in terms of the loop's value `vname`) names, for the config value `v`:
    `V` itself, `V["class"]` or `V.get("class")` of a `{"class": Cls, ...}` entry."""
    if isinstance(expr, ast.Name) and expr.id == vname:
        return _value_class(v)
    field_node: ast.expr | None = None
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and expr.value.id == vname:
        field_node = expr.slice
    elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get"
          and isinstance(expr.func.value, ast.Name) and expr.func.value.id == vname and expr.args):
        field_node = expr.args[0]
    if isinstance(field_node, ast.Constant) and isinstance(v, ast.Dict):
        for k, x in zip(v.keys, v.values):
            if isinstance(k, ast.Constant) and k.value == field_node.value:
                return _value_class(x)
    return None


def _own_nodes(fn: ast.AST) -> list[ast.AST]:
    """The nodes of a function's body, not those of functions or lambdas nested in it."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        out.append(n)
        todo += ast.iter_child_nodes(n)
    return out


def _assignments(body: list[ast.stmt], loop: ast.For | None) -> list[tuple[ast.Assign, ast.For | None]]:
    """Every assignment in `body` (branches and loops entered, nested functions not) with its innermost loop."""
    out: list[tuple[ast.Assign, ast.For | None]] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            out.append((stmt, loop))
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        inner = stmt if isinstance(stmt, ast.For) else loop
        for name in ("body", "orelse", "finalbody"):
            sub = getattr(stmt, name, None)
            if isinstance(sub, list):
                out += _assignments(sub, inner if name == "body" else loop)
        for h in getattr(stmt, "handlers", []) or []:
            out += _assignments(h.body, loop)
    return out


@dataclass
class _PackIndex:
    """What registrations refer to across the pack's files: its modules, classes by name, module-level dicts by name."""
    mods: list[_Module]
    classes: dict[str, list[tuple[_Module, ast.ClassDef]]] = field(default_factory=dict)
    dicts: dict[str, list[ast.Dict]] = field(default_factory=dict)  # module-level mapping dicts, for {**A, **B}

    @classmethod
    def of(cls, mods: list[_Module]) -> _PackIndex:
        """Index every class and every module-level `NAME = {...}` of the modules, in file order."""
        pack = cls(mods)
        for m in mods:
            for name, c in m.classes.items():
                pack.classes.setdefault(name, []).append((m, c))
            for stmt in m.tree.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
                    for t in stmt.targets:
                        if isinstance(t, ast.Name):
                            pack.dicts.setdefault(t.id, []).append(stmt.value)
        return pack


def _parse_modules(files: dict[str, str], out: Scan) -> list[_Module]:
    """Every file parsed, in path order; one that cannot be is listed in `unfollowed`, never skipped silently."""
    mods: list[_Module] = []
    for path in sorted(files):
        try:
            mods.append(_Module(path, ast.parse(files[path])))
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:  # never silently: say which file
            out.unfollowed.append(f"{path}:0: not analysed ({type(exc).__name__})")
    return mods


def _mapping_value(node: ast.AST) -> ast.expr | None:
    """The value a statement gives NODE_CLASS_MAPPINGS (`= v`, `: T = v`, `.update(v)`); None for any other."""
    if ((isinstance(node, ast.Assign) and any(_is_mapping(t) for t in node.targets))
            or (isinstance(node, ast.AnnAssign) and _is_mapping(node.target) and node.value is not None)):
        return node.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
            and _is_mapping(node.func.value) and node.args):
        return node.args[0]
    return None


class _Registrations:
    """Fills a Scan from the pack's registrations: each class id with the model inputs of the class it names."""

    def __init__(self, pack: _PackIndex, out: Scan):
        self.pack, self.out = pack, out
        self.cache: dict[int, list[tuple[str, str]]] = {}  # id(class node) -> its model inputs

    def statement(self, m: _Module, node: ast.AST) -> None:
        """One node of a module: NODE_CLASS_MAPPINGS given a value (also through a tuple target) or one entry."""
        value = _mapping_value(node)
        if value is not None:
            self.mapping_value(m, value)
        elif isinstance(node, ast.Assign) and (slot := _mapping_slot(node.targets)) is not None:
            self.tuple_target(m, node.value, slot)
        if isinstance(node, ast.Assign):
            self.entry_stores(m, node)

    def mapping_value(self, m: _Module, value: ast.expr) -> None:
        """A dict literal, `dict(...)` or a dict of the pack by name is read; another module's mapping (imported) is
        scanned in that module; anything else is unfollowed."""
        if isinstance(value, ast.Dict):
            self.take_dict(m, value)
        elif isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":
            for kw in value.keywords:
                if kw.arg:
                    self.add(m, kw.arg, _value_class(kw.value))
            for a in value.args:
                if isinstance(a, ast.Dict):
                    self.take_dict(m, a)
        elif isinstance(value, ast.Name) and value.id in self.pack.dicts:
            for d in self.pack.dicts[value.id]:
                self.take_dict(m, d)
        elif not ((isinstance(value, ast.Attribute) and value.attr == "NODE_CLASS_MAPPINGS")
                  or (isinstance(value, ast.Name) and value.id in m.imported)):
            self.unfollowed(m, value)

    def tuple_target(self, m: _Module, value: ast.expr, slot: int) -> None:
        """`NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = helper(CONFIG)` (ComfyUI-KJNodes) or a tuple: the
        entries _TupleRegistration can evaluate, else unfollowed."""
        found = None if slot < 0 else _TupleRegistration(m, self.pack.mods, self.pack.dicts).entries(value, slot)
        if found is None:
            self.unfollowed(m, value)  # the probe decides, never "does not register"
        for cid, cls_name in found or []:
            self.add(m, cid, cls_name)

    def entry_stores(self, m: _Module, node: ast.Assign) -> None:
        """`NODE_CLASS_MAPPINGS["id"] = Cls` registers one class; a key that is not a constant is unfollowed."""
        for t in node.targets:
            if isinstance(t, ast.Subscript) and _is_mapping(t.value):
                if isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str):
                    self.add(m, t.slice.value, _value_class(node.value))
                else:
                    self.unfollowed(m, t)

    def class_ids(self, m: _Module) -> None:
        """V3 / entrypoint style: a class holding a `node_id` constant or `Schema(node_id="...")` registers itself."""
        for cls in m.classes.values():
            for n in ast.walk(cls):
                if (isinstance(n, ast.Assign) and len(n.targets) == 1
                        and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                        and (getattr(n.targets[0], "id", None) in ID_CONSTANTS
                             or getattr(n.targets[0], "attr", None) == "node_id")):
                    self.add(m, n.value.value, cls.name)
                if isinstance(n, ast.Call) and (getattr(n.func, "attr", None) or getattr(n.func, "id", None)) == "Schema":
                    for kw in n.keywords:
                        if kw.arg == "node_id" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                            self.add(m, kw.value.value, cls.name)

    def take_dict(self, m: _Module, d: ast.Dict, seen: tuple[int, ...] = ()) -> None:
        """A mapping dict literal: constant keys registered, `{**OTHER}` followed into the pack's dicts of that name
        (each once), anything else unfollowed."""
        for k, v in zip(d.keys, d.values):
            if k is None:  # {**OTHER}
                name = getattr(v, "id", None) or getattr(v, "attr", None)
                for other in self.pack.dicts.get(name or "", []):
                    if id(other) not in seen:
                        self.take_dict(m, other, (*seen, id(other)))
                if name not in self.pack.dicts and name not in m.imported and not isinstance(v, ast.Dict):
                    self.unfollowed(m, v)
            elif isinstance(k, ast.Constant) and isinstance(k.value, str):
                self.add(m, k.value, _value_class(v))
            else:
                self.unfollowed(m, k)

    def add(self, m: _Module, cid: str, cls_name: str | None) -> None:
        """Register `cid` as the class named: its model inputs (a later registration with inputs wins), or, having
        none of its own, its base classes to inherit them from."""
        c, inputs = self.inputs_of(m, cls_name)
        if inputs or cid not in self.out.classes:
            self.out.classes[cid] = inputs
        if c is not None and not inputs:
            names = [getattr(b, "attr", None) or getattr(b, "id", None) for b in c.bases]
            bases = [b for b in names if b and b not in ("object", "ComfyNode")]
            if bases:
                self.out.inherits[cid] = bases

    def inputs_of(self, m: _Module, cls_name: str | None) -> tuple[ast.ClassDef | None, list[tuple[str, str]]]:
        """The class a name means (this module's, else the pack's first) and its model inputs, each class analysed
        once; a class too pathological to analyse has none, and says so in `unfollowed`."""
        hits = self.pack.classes.get(cls_name or "", [])
        hit = next(((mm, c) for mm, c in hits if mm is m), hits[0] if hits else None)
        if hit is None:
            return None, []
        mm, c = hit
        if id(c) not in self.cache:
            try:
                self.cache[id(c)] = _class_inputs(mm, c)
            except (RecursionError, ValueError, MemoryError) as exc:  # a pathological class: its inputs unknown
                self.cache[id(c)] = []
                self.out.unfollowed.append(f"{mm.path}:{c.lineno}: inputs of {c.name} not analysed ({type(exc).__name__})")
        return c, self.cache[id(c)]

    def unfollowed(self, m: _Module, node: ast.AST) -> None:
        """A registration the scan cannot read is listed (file:line: source), never dropped: the probe decides."""
        self.out.unfollowed.append(f"{m.path}:{getattr(node, 'lineno', 0)}: {ast.unparse(node)[:120]}")

    def inherit_within_pack(self) -> None:
        """A class with no model inputs of its own takes those of the first of its bases in the pack that has some;
        the others stay in `inherits` for the caller (core loaders)."""
        out = self.out
        for cid in list(out.inherits):
            for base in out.inherits[cid]:
                if out.classes.get(cid):
                    break
                hits = self.pack.classes.get(base)
                if hits:
                    _, inputs = self.inputs_of(hits[0][0], base)
                    if inputs:
                        out.classes[cid] = inputs
            if out.classes.get(cid):
                del out.inherits[cid]


def scan(files: dict[str, str]) -> Scan:
    """Scan {relative path: source}: every module's registrations in file order, then inputs inherited in the pack."""
    out = Scan()
    pack = _PackIndex.of(_parse_modules(files, out))
    reg = _Registrations(pack, out)
    for m in pack.mods:
        for node in ast.walk(m.tree):
            reg.statement(m, node)
        reg.class_ids(m)
    reg.inherit_within_pack()
    return out


def resolve_inherited(classes: dict[str, list[tuple[str, str]]], inherits: dict[str, list[str]],
                      known: dict[str, list[tuple[str, str]]]) -> None:
    """Give a class with no model inputs of its own those of a base class found in `known` (e.g. core loaders)."""
    for cid, bases in inherits.items():
        if not classes.get(cid):
            for b in bases:
                if known.get(b):
                    classes[cid] = list(known[b])
                    break
