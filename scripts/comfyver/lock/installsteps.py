"""A node pack's install steps that comfyver does not perform, read statically (issue 28).

ComfyUI-Manager runs a pack's `install.py` (and people run `install.sh` / `install.bat`) after cloning it: it may
pip-install packages its requirements.txt does not list, and download files. comfyver never runs pack code (it is
untrusted): the Python lock is made from requirements.txt / pyproject.toml only (lock/pylock.py). This module finds
what such a step would do, so `comfyver lock` can say so:

- `install.py`, `install.sh`, `install.bat` at the pack's root, always; `prestartup_script.py` only where it
  pip-installs (it runs at every ComfyUI start, usually for other things);
- requirement files outside the usual place (`requirements-*.txt`, `requirements_*.txt`, `requirements/*.txt` at the
  root; development, test and docs files left out) that no install script reads;
- in each script: what it would pip-install (subprocess / os.system / pip.main calls and helper functions with
  literal package names, `-r <file>` with a literal file, a requirements file it names), the literal URLs it names
  (downloads), and "unknown" for every install whose argument is computed at run time.

`install.py` is parsed with `ast`, never imported or run; shell scripts are read line by line. Every read is bounded
(file size, syntax nodes, evaluation steps, items kept) and a file it cannot read is reported as unreadable, never
raised. `for_lock` reads every locked pack (git: at its commit, from the git cache; registry: the verified archive;
cached per commit or archive hash) and compares each step's installs with the version's Python lock (ComfyUI's
requirements, every pack's, `lock --pip`): `satisfied`, or the `--pip` fix.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypedDict

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from comfyver.base import project, web
from comfyver.base.errors import ComfyverError
from comfyver.base.fsutil import atomic_write_json
from comfyver.base.lockfile import Lock, NodeLocked

READER_VERSION = 1             # bump when what is read changes (cached results are per version)
MAX_FILE_BYTES = 512 * 1024    # a script or requirements file larger than this is not read
MAX_FILES = 64                 # files of one pack read at all
MAX_DEPTH = 3                  # folder depth of requirement files looked at
MAX_NODES = 300_000            # syntax nodes of one install.py
MAX_EVAL_STEPS = 200_000       # static evaluation steps for one file
MAX_EVAL_DEPTH = 24            # nesting of one evaluation
MAX_INLINE = 3                 # the file's own functions followed into each other
MAX_CALL_STEPS = 5_000         # static evaluation steps for one call's arguments
MAX_TOKENS = 256               # words of one evaluated command
MAX_VALUE = 4096               # characters of one evaluated string
MAX_ITEMS = 50                 # entries kept per list of a step
MAX_TEXT = 200                 # characters kept per entry
MAX_SHELL_LINES = 5_000

SCRIPTS = ("install.py", "install.sh", "install.bat")
PRESTARTUP = "prestartup_script.py"
USUAL = ("requirements.txt", "pyproject.toml")
NOT_INSTALL = re.compile(r"(^|[-_./])(dev|devel|test|tests|testing|doc|docs|lint|ci|build)([-_.]|$)", re.I)
OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")

MARK = "\x00"                  # a part of a value known only at run time
PARAM = re.compile(r"\x01(\d+)\x01")  # a function's own parameter, inside that function

Value: TypeAlias = "str | list[str] | None"


@dataclass
class InstallStep:
    """One install step of a pack: what it would install and download, read without running it."""
    file: str                                                     # path in the pack
    kind: str                                                     # "script" | "prestartup" | "requirements"
    would_install: list[str] = field(default_factory=list)         # requirement specs, as written
    requirement_files: list[str] = field(default_factory=list)     # requirement files it installs from
    downloads: list[str] = field(default_factory=list)             # literal URLs it names
    unknown: list[str] = field(default_factory=list)               # what a static read cannot tell, with the line
    installs_unknown: bool = False                                 # some install's argument is computed at run time
    unreadable: str | None = None                                  # why the file could not be read
    truncated: bool = False                                        # a cap was reached: lists are partial

    def to_json(self) -> dict[str, Any]:  # JSON
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> InstallStep:  # JSON written by to_json
        return InstallStep(**d)

    def empty(self) -> bool:
        return not (self.would_install or self.downloads or self.unknown or self.unreadable)


@dataclass
class PackSteps:
    """What a pack's tree holds: its declared requirements (requirements.txt, else pyproject.toml) and its steps."""
    declared: list[str] = field(default_factory=list)
    steps: list[InstallStep] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:  # JSON
        return {"declared": self.declared, "steps": [s.to_json() for s in self.steps]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> PackSteps:  # JSON written by to_json
        return PackSteps(list(d["declared"]), [InstallStep.from_json(s) for s in d["steps"]])


class StepReport(TypedDict):
    """One install step as `lock --json` prints it (`install_steps`)."""
    pack: str
    file: str
    kind: str
    would_install: list[str]
    requirement_files: list[str]
    downloads: list[str]
    unknown: list[str]
    missing: list[str]          # would_install entries the version's Python lock does not have
    satisfied: bool             # everything it installs is in the version's Python lock (and nothing is unknown)
    unreadable: str | None
    truncated: bool             # a cap of the read was reached: the lists are partial


# ---------------------------------------------------------------- which files


def wanted(path: str) -> bool:
    """Is `path` (in a pack's tree, `/`-separated) a file the reader looks at?"""
    parts = path.split("/")
    if len(parts) == 1 and parts[0] in (*SCRIPTS, PRESTARTUP, *USUAL):
        return True
    name = parts[-1].lower()
    if len(parts) > MAX_DEPTH or not name.endswith(".txt"):
        return False
    if any(p in (".git", "node_modules", "tests", "test") for p in parts[:-1]):
        return False
    return len(parts) == 1 or "requirement" in path.lower()  # every root .txt: a script may install from one


def _extra_requirement_file(path: str) -> bool:
    """A requirements file beside the usual one that comfyver does not read (reported unless a script reads it)."""
    parts = path.split("/")
    name = parts[-1]
    if path == "requirements.txt" or not name.lower().endswith(".txt") or NOT_INSTALL.search(name[:-4]):
        return False
    if len(parts) == 1:
        return name.lower().startswith(("requirements-", "requirements_", "requirements."))
    return len(parts) == 2 and parts[0].lower() == "requirements"


# ---------------------------------------------------------------- requirement files


def _clip(text: str) -> str:
    text = text.replace(MARK, "…")
    text = PARAM.sub("…", text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _add(items: list[str], value: str, step: InstallStep) -> None:
    value = _clip(value)
    if value in items:
        return
    if len(items) >= MAX_ITEMS:
        step.truncated = True
        return
    items.append(value)


PIP_VALUE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "-t", "--target",
                     "--prefix", "--root", "--python", "--platform", "--python-version", "--implementation", "--abi",
                     "--only-binary", "--no-binary", "--upgrade-strategy", "--cache-dir", "--src", "--log",
                     "--progress-bar", "--proxy", "--timeout", "--retries", "--config-settings", "-C", "--global-option",
                     "--install-option", "--report", "--root-user-action", "-c", "--constraint"}


def parse_requirements(text: str) -> tuple[list[str], list[str], list[str]]:
    """A requirements file's (requirements as written, files it includes with -r, lines that are neither)."""
    reqs: list[str] = []
    includes: list[str] = []
    bad: list[str] = []
    for n, raw in enumerate(text.splitlines()[:MAX_SHELL_LINES], 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"(-r|--requirement)(?:\s+|=)(\S+)$", line):
            includes.append(m[2])
        elif m := re.match(r"(-e|--editable)(?:\s+|=)(\S+)$", line):
            reqs.append(m[2])
        elif line.startswith("-"):
            continue  # an option: index, constraint, binary policy
        elif line.startswith(("git+", "http://", "https://", "file:")) or _requirement(line):
            reqs.append(line)
        else:
            bad.append(f"line {n}: {line}")
    return reqs, includes, bad


def _requirement(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _looks_like_requirements(text: str) -> bool:
    reqs, includes, bad = parse_requirements(text)
    return bool(reqs or includes) and not bad


def _norm_path(path: str) -> str | None:
    """A path a script names, relative to the pack (run time prefixes dropped: the pack's folder), or None."""
    path = path.replace("\\", "/")
    if MARK in path or PARAM.search(path):
        path = PARAM.sub(MARK, path).rsplit(MARK, 1)[1]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _install_file(step: InstallStep, files: Mapping[str, str], path: str, depth: int = 0) -> bool:
    """Put the requirements of the pack's file `path` into the step (its -r includes, one level deep)."""
    rel = _norm_path(path)
    if rel is None or rel not in files:
        return False
    if rel not in step.requirement_files:
        _add(step.requirement_files, rel, step)
    reqs, includes, bad = parse_requirements(files[rel])
    for r in reqs:
        _add(step.would_install, r, step)
    for b in bad:
        _add(step.unknown, f"{rel}: {b}: not a requirement", step)
    for inc in includes:
        inner = str(Path(rel).parent / inc) if "/" in rel else inc
        if depth >= 2 or not _install_file(step, files, inner, depth + 1):
            _add(step.unknown, f"{rel}: -r {inc}: not read", step)
    return True


# ---------------------------------------------------------------- pip command lines


SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "<", ">", ">>", "2>"}


def _is_pip(token: str) -> bool:
    name = token.replace("\\", "/").rsplit("/", 1)[-1].lower().removesuffix(".exe")
    return name in ("pip", "pip3") or re.fullmatch(r"pip3\.\d+", name) is not None


def pip_install_args(tokens: list[str]) -> list[list[str]]:
    """The arguments after each `pip install` in a command's tokens (`python -m pip install`, `pip3 install`,
    `uv pip install`; commands joined with && or ; split)."""
    out: list[list[str]] = []
    segment: list[str] = []
    for t in [*tokens, ";"]:
        if t not in SEPARATORS:
            segment.append(t)
            continue
        for i, tok in enumerate(segment):
            if tok == "install" and any(_is_pip(x) for x in segment[:i]):
                out.append(segment[i + 1:])
                break
        segment = []
    return out


def _install_args(step: InstallStep, files: Mapping[str, str], args: list[str], line: int,
                  index_urls: set[str]) -> None:
    """`pip install ARGS` at `line`: requirements, -r files, unknowns into the step."""
    it = iter(args)
    for tok in it:
        if MARK in tok and tok.strip(MARK + "\"' ") == "":
            step.installs_unknown = True
            _add(step.unknown, f"line {line}: pip install of a value computed at run time", step)
            continue
        tok = tok.strip("\"'")
        if tok in ("-r", "--requirement") or tok.startswith(("-r", "--requirement=")):
            f = next(it, "") if tok in ("-r", "--requirement") else tok.split("=", 1)[-1] if "=" in tok else tok[2:]
            f = f.strip("\"'")
            if not _install_file(step, files, f):
                step.installs_unknown = True
                _add(step.unknown, f"line {line}: pip install -r {_clip(f) or '?'}: "
                                   + ("a file named at run time" if MARK in f or not f else "no such file in the pack"),
                     step)
            continue
        if tok in ("-e", "--editable"):
            tok = next(it, "").strip("\"'")
        elif tok in PIP_VALUE_OPTIONS:
            value = next(it, "")
            if tok in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                index_urls.add(value.strip("\"'"))
            continue
        elif tok.startswith("-"):
            continue
        if MARK in tok or PARAM.search(tok):
            step.installs_unknown = True
            _add(step.unknown, f"line {line}: pip install {_clip(tok)}: computed at run time", step)
        elif tok:
            _add(step.would_install, tok, step)


# ---------------------------------------------------------------- install.py, statically


@dataclass
class _Scope:
    assigns: dict[str, list[ast.expr]]
    params: list[str]
    bound: dict[str, Value] | None = None      # an inlined call's arguments
    parent: _Scope | None = None
    inlined: int = 0                           # calls inlined to get here
    memo: dict[str, Value] = field(default_factory=dict)


class _OutOfBudget(Exception):
    """The file's evaluation budget is spent: the read stops."""


class _CallOutOfBudget(Exception):
    """One call's evaluation budget is spent: its arguments are unknown."""


def _dotted(e: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(e, ast.Attribute) and len(parts) < 8:
        parts.append(e.attr)
        e = e.value
    if isinstance(e, ast.Name):
        parts.append(e.id)
    elif isinstance(e, ast.Call):
        parts.append(_dotted(e.func) + "()")
    else:
        parts.append("?")
    return ".".join(reversed(parts))


DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
HELPER = re.compile(r"(^|_)pip_?install|install_?(packages?|requirements?|reqs?|deps|dependencies|pip|modules?)$|"
                    r"^ensure_?(packages?|installed|pip)|^pip_?(packages?|install)", re.I)
LOG_CALLS = re.compile(r"(^|\.)(print|log|info|debug|warning|warn|error|exception|critical|echo)$")
URL = re.compile(r"(?:https?|ftp)://[^\s\"'<>`]+", re.I)


def _own_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes of a scope's statements, not entering nested functions (each is its own scope)."""
    stack: list[ast.AST] = [s for s in reversed(body) if not isinstance(s, DEFS)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in reversed(list(ast.iter_child_nodes(node))) if not isinstance(c, DEFS))


def _assignments(body: list[ast.stmt]) -> dict[str, list[ast.expr]]:
    out: dict[str, list[ast.expr]] = {}
    for node in _own_nodes(body):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None \
                and isinstance(node.target, ast.Name):
            out.setdefault(node.target.id, []).append(node.value)
    return out


class _PyReader:
    """One install.py's tree, evaluated as far as literals go."""

    def __init__(self, tree: ast.Module, files: Mapping[str, str], step: InstallStep):
        self.files, self.step = files, step
        self.steps_left = MAX_EVAL_STEPS
        self.module = _Scope(_assignments(tree.body), [])
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.scopes: list[tuple[_Scope, list[ast.stmt], str | None]] = [(self.module, tree.body, None)]
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, node)
                a = node.args
                params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                self.scopes.append((_Scope(_assignments(node.body), params, parent=self.module), node.body, node.name))
        self.helpers: dict[str, list[str]] = {}  # function -> the pip args it installs, \x01i\x01: its i-th parameter
        self.index_urls: set[str] = set()
        self.call_steps_left = MAX_CALL_STEPS

    # -- evaluation: a str (MARK for run time parts), a list of str tokens, or None (unknown)

    def eval(self, e: ast.expr, scope: _Scope, depth: int = 0) -> Value:
        value = self._eval(e, scope, depth)
        if (isinstance(value, list) and len(value) > MAX_TOKENS) or (isinstance(value, str) and len(value) > MAX_VALUE):
            return None  # a value doubled on itself, or megabytes of it: unknown
        return value

    def _eval(self, e: ast.expr, scope: _Scope, depth: int) -> Value:
        self.steps_left -= 1
        self.call_steps_left -= 1
        if self.steps_left < 0:
            raise _OutOfBudget
        if self.call_steps_left < 0:
            raise _CallOutOfBudget
        if depth > MAX_EVAL_DEPTH:
            return None
        d = depth + 1
        if isinstance(e, ast.Constant):
            return e.value if isinstance(e.value, str) else None
        if isinstance(e, ast.JoinedStr):
            out = ""
            for v in e.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    out += v.value
                elif isinstance(v, ast.FormattedValue):
                    inner = self.eval(v.value, scope, d)
                    out += inner if isinstance(inner, str) else MARK
            return out
        if isinstance(e, ast.List | ast.Tuple | ast.Set):
            tokens: list[str] = []
            for elt in e.elts:
                item = self.eval(elt.value if isinstance(elt, ast.Starred) else elt, scope, d)
                if isinstance(elt, ast.Starred) and isinstance(item, list):
                    tokens += item
                else:
                    tokens.append(item if isinstance(item, str) else MARK)
            return tokens
        if isinstance(e, ast.Name):
            return self.lookup(e.id, scope, d)
        if isinstance(e, ast.BinOp):
            return self.binop(e, scope, d)
        if isinstance(e, ast.IfExp):
            return _either([self.eval(e.body, scope, d), self.eval(e.orelse, scope, d)])
        if isinstance(e, ast.Call):
            return self.call(e, scope, d)
        return None

    def lookup(self, name: str, scope: _Scope, depth: int) -> Value:
        if name == "__file__":
            return MARK + "/install.py"
        s: _Scope | None = scope
        while s is not None:
            if s.bound is not None and name in s.bound:
                return s.bound[name]
            if name in s.assigns:
                if name in s.memo:
                    return s.memo[name]
                s.memo[name] = None  # a cycle (x = x + [...]) reads as unknown
                value = s.memo[name] = _either([self.eval(x, s, depth) for x in s.assigns[name][:8]])
                return value
            if name in s.params:
                return None if s.bound is not None else f"\x01{s.params.index(name)}\x01"
            s = s.parent
        return None

    def binop(self, e: ast.BinOp, scope: _Scope, d: int) -> Value:
        left, right = self.eval(e.left, scope, d), self.eval(e.right, scope, d)
        if isinstance(e.op, ast.Add):
            if isinstance(left, list) or isinstance(right, list):
                def as_list(v: Value) -> list[str]:
                    return v if isinstance(v, list) else [v if isinstance(v, str) else MARK]
                return as_list(left) + as_list(right)
            if left is None and right is None:
                return None
            return (left if isinstance(left, str) else MARK) + (right if isinstance(right, str) else MARK)
        if isinstance(e.op, ast.Div):  # pathlib: a / "b"
            if isinstance(right, str):
                return (left if isinstance(left, str) else MARK) + "/" + right
            return None
        if isinstance(e.op, ast.Mod) and isinstance(left, str):
            return re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfi]", MARK, left)
        return None

    def call(self, e: ast.Call, scope: _Scope, d: int) -> Value:
        name = _dotted(e.func)
        last = name.rsplit(".", 1)[-1]
        args = [self.eval(a, scope, d) for a in e.args[:8] if not isinstance(a, ast.Starred)]
        strs = [a if isinstance(a, str) else MARK for a in args]
        if name.endswith("path.join") or last == "joinpath":
            base: list[str] = [] if last != "joinpath" or not isinstance(e.func, ast.Attribute) else [
                v if isinstance(v := self.eval(e.func.value, scope, d), str) else MARK]
            return "/".join(base + strs) if base + strs else None
        if name in ("Path", "pathlib.Path", "PurePath", "str", "os.fspath", "os.path.abspath", "os.path.normpath",
                    "os.path.realpath", "os.path.expanduser") or last in ("resolve", "absolute"):
            if last in ("resolve", "absolute") and isinstance(e.func, ast.Attribute):
                return self.eval(e.func.value, scope, d)
            return "/".join(strs) if strs else None
        if name in ("os.path.dirname",) or last == "parent":
            return MARK
        if name in ("shlex.split",) and strs:
            return _split_shell(strs[0])
        if name in ("list", "tuple") and args and isinstance(args[0], list):
            return args[0]
        if isinstance(e.func, ast.Attribute):
            owner = self.eval(e.func.value, scope, d) if last in ("join", "split", "format", "strip") else None
            if last == "join" and isinstance(owner, str) and args and isinstance(args[0], list):
                return owner.join(args[0])
            if last == "split" and isinstance(owner, str):
                return owner.split(strs[0]) if strs and MARK not in strs[0] else owner.split()
            if last == "format" and isinstance(owner, str):
                return re.sub(r"\{[^{}]*\}", MARK, owner)
            if last == "strip" and isinstance(owner, str):
                return owner.strip()
        fn = self.functions.get(name) if isinstance(e.func, ast.Name) else None
        if fn is not None and scope.inlined < MAX_INLINE:
            return self.inline(fn, args, scope.inlined + 1, d)
        return None

    def inline(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, args: list[Value], inlined: int, d: int) -> Value:
        """A call of the file's own function: the first of its returns that evaluates, its parameters bound."""
        a = fn.args
        params = [p.arg for p in (*a.posonlyargs, *a.args)]
        inner = _Scope(_assignments(fn.body), params, dict(zip(params, args)), self.module, inlined)
        returns = [n.value for n in _own_nodes(fn.body) if isinstance(n, ast.Return) and n.value is not None]
        return _either([self.eval(r, inner, d) for r in returns[:8]]) if returns else None

    # -- what it installs

    def read(self) -> None:
        step = self.step
        ignored: set[int] = set()   # string constants only printed or logged
        docstrings: set[int] = set()  # and the literal parts of f-strings (read as the f-string)
        for _, body, _ in self.scopes:
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
            for node in _own_nodes(body):
                if isinstance(node, ast.JoinedStr):
                    docstrings.update(id(v) for v in node.values)
                if isinstance(node, ast.Call) and LOG_CALLS.search(_dotted(node.func)):
                    ignored.update(id(c) for a in node.args for c in ast.walk(a) if isinstance(c, ast.Constant))
        for round_ in range(2):  # the second round knows the helpers (functions that pip-install a parameter)
            final = round_ == 1
            for scope, body, fname in self.scopes:
                for node in _own_nodes(body):
                    if isinstance(node, ast.Call):
                        self.pip_call(node, scope, fname, final)
        for scope, body, _ in self.scopes:
            for node in _own_nodes(body):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    text = node.value
                    if len(text) > 4096:
                        continue
                    if id(node) not in ignored:
                        for url in URL.findall(text):
                            if url not in self.index_urls:
                                _add(step.downloads, web.redact(url.rstrip(".,;)")), step)
                    if (rel := _norm_path(text)) and rel in self.files and rel.endswith(".txt") \
                            and _looks_like_requirements(self.files[rel]):
                        _install_file(step, self.files, rel)
                elif isinstance(node, ast.JoinedStr) and id(node) not in ignored:
                    first = node.values[0] if node.values else None
                    if isinstance(first, ast.Constant) and isinstance(first.value, str) \
                            and re.match(r"(?:https?|ftp)://", first.value, re.I):
                        self.call_steps_left = MAX_CALL_STEPS
                        try:
                            shown = self.eval(node, scope)
                        except _CallOutOfBudget:
                            shown = None
                        _add(step.unknown, f"line {node.lineno}: a URL built at run time: "
                                           f"{web.redact(shown if isinstance(shown, str) else first.value)}", step)

    def pip_call(self, node: ast.Call, scope: _Scope, fname: str | None, final: bool) -> None:
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        self.call_steps_left = MAX_CALL_STEPS
        try:
            args = [self.eval(a, scope) for a in node.args[:8] if not isinstance(a, ast.Starred)]
            args += [self.eval(k.value, scope) for k in node.keywords if k.arg in ("args", "cmd", "command")]
        except _CallOutOfBudget:
            self.step.truncated = True
            return
        found: list[list[str]] = []
        for v in args:
            if isinstance(v, str):
                if "pip" in v and "install" in v:
                    found += pip_install_args(_split_shell(v))
            elif isinstance(v, list):
                if name.endswith("pip.main") and v[:1] == ["install"]:
                    found.append(v[1:])
                else:
                    found += pip_install_args(v)
        if not found and last in self.helpers and isinstance(node.func, ast.Name):
            found.append(_substitute(self.helpers[last], args))
        elif not found and HELPER.search(last) and last not in self.functions and args:
            v = args[0]  # an imported helper: pip_install(["a", "b"]), install_package("a", "1.0") (a version after)
            if isinstance(v, list):
                found.append(v)
            elif isinstance(v, str):
                found.append(v.split())
        for pip_args in found:
            if fname is not None and any(PARAM.search(t) for t in pip_args) and fname not in self.helpers:
                self.helpers[fname] = pip_args
                continue
            if fname is not None and fname in self.helpers and any(PARAM.search(t) for t in pip_args):
                continue  # read at its call sites
            if final:
                _install_args(self.step, self.files, pip_args, node.lineno, self.index_urls)


def _either(values: list[Value]) -> Value:
    """One value for what may be any of `values` (branches, returns, assignments): the one value when they agree;
    the first when all are token lists (commands differing in flags: `[python, "-s", "-m", "pip", "install"]` on one
    branch, without "-s" on the other); else unknown at run time."""
    if not values:
        return None
    if all(v == values[0] for v in values):
        return values[0]
    if all(isinstance(v, list) for v in values):
        return values[0]
    return MARK if any(isinstance(v, str) for v in values) else None


def _substitute(pattern: list[str], args: list[Value]) -> list[str]:
    out: list[str] = []
    for tok in pattern:
        m = PARAM.fullmatch(tok)
        if m:
            i = int(m[1])
            v = args[i] if i < len(args) else None
            out += v if isinstance(v, list) else [v if isinstance(v, str) else MARK]
        else:
            out.append(PARAM.sub(MARK, tok))
    return out


def _split_shell(text: str) -> list[str]:
    """Shell words, with `;`, `&&`, `||`, `|` as words of their own (where commands join)."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return text.split()


def read_install_py(path: str, text: str, files: Mapping[str, str], kind: str = "script") -> InstallStep:
    """What a Python install script would install and download (parsed, never run)."""
    step = InstallStep(path, kind)
    if len(text) > MAX_FILE_BYTES:
        step.unreadable = f"{len(text)} characters: larger than the {MAX_FILE_BYTES // 1024} KiB read"
        return step
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=path)
    except SyntaxError as exc:
        step.unreadable = f"not valid Python ({exc.msg}, line {exc.lineno})"
        return step
    except (MemoryError, RecursionError, ValueError):
        step.unreadable = "too deeply nested to parse"
        return step
    for count, _ in enumerate(ast.walk(tree), 1):
        if count > MAX_NODES:
            step.unreadable = f"more than {MAX_NODES} syntax nodes"
            return step
    try:
        _PyReader(tree, files, step).read()
    except (_OutOfBudget, RecursionError):
        step.truncated = True
        step.unknown.append("the static read stopped at its budget: the lists are partial")
    return step


# ---------------------------------------------------------------- install.sh / install.bat


def read_shell(path: str, text: str, files: Mapping[str, str]) -> InstallStep:
    """What a shell or batch install script would install and download (read line by line)."""
    step = InstallStep(path, "script")
    if len(text) > MAX_FILE_BYTES:
        step.unreadable = f"{len(text)} characters: larger than the {MAX_FILE_BYTES // 1024} KiB read"
        return step
    bat = path.lower().endswith(".bat")
    env: dict[str, str] = {}
    index_urls: set[str] = set()
    lines = text.splitlines()
    if len(lines) > MAX_SHELL_LINES:
        step.truncated = True
    for n, raw in enumerate(lines[:MAX_SHELL_LINES], 1):
        line = raw.strip()
        if not line or line.startswith(("#", "::")) or (bat and re.match(r"(?i)rem(\s|$)", line)):
            continue
        m = (re.match(r'(?i)^set\s+"?([A-Za-z_]\w*)=(.*?)"?$', line) if bat
             else re.match(r"^(?:export\s+)?([A-Za-z_]\w*)=(\S.*)$", line))
        if m:
            value = _expand(m[2].strip().strip("\"'"), env, bat)
            env[m[1].lower()] = value if len(value) <= MAX_VALUE else MARK  # a=$a$a, line after line: bounded
            for url in URL.findall(m[2]):
                if "$" not in url and "%" not in url:
                    _add(step.downloads, web.redact(url.rstrip(".,;)\"'")), step)
            continue
        expanded = _expand(line, env, bat)
        tokens = _split_shell(expanded) if not bat else [t.strip('"') for t in expanded.split()]
        for pip_args in pip_install_args(tokens):
            _install_args(step, files, pip_args, n, index_urls)
        for url in URL.findall(line):
            if "$" in url or "%" in url:
                _add(step.unknown, f"line {n}: a URL built at run time: {web.redact(url)}", step)
            elif url not in index_urls:
                _add(step.downloads, web.redact(url.rstrip(".,;)")), step)
        for word in re.findall(r"[\w./\\-]+\.txt", expanded):
            rel = _norm_path(word)
            if rel and rel in files and _looks_like_requirements(files[rel]):
                _install_file(step, files, rel)
    return step


def _expand(text: str, env: Mapping[str, str], bat: bool) -> str:
    """Variables replaced by their values set above, run time values (`$0`, `%~dp0`, loop variables) by MARK."""
    if bat:
        text = re.sub(r"%~\w*\d", MARK, text)
        text = re.sub(r"%%\w", MARK, text)
        return re.sub(r"[%!](\w+)[%!]", lambda m: env.get(m[1].lower(), MARK), text)
    text = re.sub(r"\$\((?:[^()]|\([^()]*\))*\)|`[^`]*`", MARK, text)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1].lower(), MARK), text)


# ---------------------------------------------------------------- a pack's tree


def _declared(files: Mapping[str, str]) -> list[str]:
    if "requirements.txt" in files:
        return parse_requirements(files["requirements.txt"])[0]
    if "pyproject.toml" in files:
        try:
            deps = tomllib.loads(files["pyproject.toml"]).get("project", {}).get("dependencies", [])
        except tomllib.TOMLDecodeError:
            return []
        return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
    return []


def _read_script(path: str, text: str, files: Mapping[str, str], kind: str = "script") -> InstallStep:
    """One script read; a reader's own failure on strange content is the file's `unreadable`, never raised."""
    try:
        return read_install_py(path, text, files, kind) if path.endswith(".py") else read_shell(path, text, files)
    except Exception as exc:  # noqa: BLE001  (pack content is untrusted: the lock goes on)
        return InstallStep(path, kind, unreadable=f"the static read failed: {type(exc).__name__}")


def read_tree(files: Mapping[str, str], too_large: Mapping[str, int] | None = None) -> PackSteps:
    """A pack's install steps from the text of its `wanted` files (path -> text); `too_large`: files not read
    (path -> size)."""
    steps: list[InstallStep] = []
    for path, size in sorted((too_large or {}).items()):
        if path in SCRIPTS or _extra_requirement_file(path):
            steps.append(InstallStep(path, "script" if path in SCRIPTS else "requirements",
                                     unreadable=f"{size} bytes: larger than the {MAX_FILE_BYTES // 1024} KiB read"))
    for path in SCRIPTS:
        if path in files:
            steps.append(_read_script(path, files[path], files))
    if PRESTARTUP in files:
        pre = _read_script(PRESTARTUP, files[PRESTARTUP], files, "prestartup")
        if pre.would_install or pre.installs_unknown or pre.requirement_files:
            pre.downloads = []  # it is reported for what it pip-installs
            steps.append(pre)
    read_by_scripts = {f for s in steps for f in s.requirement_files}
    for path in sorted(files):
        if _extra_requirement_file(path) and path not in read_by_scripts:
            step = InstallStep(path, "requirements")
            _install_file(step, files, path)
            if step.would_install or step.unknown:
                steps.append(step)
    return PackSteps(_declared(files), sorted(steps, key=lambda s: (s.file not in SCRIPTS, s.file)))


def tree_files_at(repo: Path, rev: str, what: str = "git") -> tuple[dict[str, str], dict[str, int]]:
    """The `wanted` files of a git tree at `rev` (path -> text) and those too large to read (path -> size)."""
    from comfyver.sources import gitsource

    out = gitsource.git("ls-tree", "-r", "-z", "-l", "--full-tree", rev, cwd=repo, what=what).stdout
    files: dict[str, str] = {}
    large: dict[str, int] = {}
    for rec in out.split(b"\0"):
        meta, _, raw = rec.partition(b"\t")
        parts = meta.split()
        if len(parts) != 4 or parts[1] != b"blob" or parts[0] == b"120000":
            continue
        path = raw.decode("utf-8", errors="replace")
        if not wanted(path) or len(files) + len(large) >= MAX_FILES:
            continue
        size = int(parts[3]) if parts[3].isdigit() else MAX_FILE_BYTES + 1
        if size > MAX_FILE_BYTES:
            large[path] = size
            continue
        blob = gitsource.git("cat-file", "blob", parts[2].decode(), cwd=repo, what=what).stdout
        files[path] = blob.decode("utf-8", errors="replace")
    return files, large


def dir_files(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The `wanted` files of an unpacked tree (symlinks not followed)."""
    files: dict[str, str] = {}
    large: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if len(rel_dir.parts) >= MAX_DEPTH:
            dirnames[:] = []
        for name in sorted(filenames):
            f = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if f.is_symlink() or not f.is_file() or not wanted(rel) or len(files) + len(large) >= MAX_FILES:
                continue
            size = f.stat().st_size
            if size > MAX_FILE_BYTES:
                large[rel] = size
            else:
                files[rel] = f.read_bytes().decode("utf-8", errors="replace")
    return files, large


def read_locked(name: str, loc: NodeLocked) -> PackSteps:
    """A locked pack's install steps: git at its commit (git cache), registry from its verified archive; cached."""
    key = f"git-{loc['rev']}" if loc["type"] == "git" else "zip-" + hashlib.sha256(loc["hash"].encode()).hexdigest()[:32]
    cache = project.cache_dir() / "install-steps" / f"{key}-v{READER_VERSION}.json"
    try:
        return PackSteps.from_json(json.loads(cache.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    what = f"node {name}"
    if loc["type"] == "git":
        from comfyver.sources import gitsource

        files, large = tree_files_at(gitsource.fetch(loc["url"], loc["rev"], what), loc["rev"], what)
    else:
        from comfyver.sources import locked as locked_source

        with tempfile.TemporaryDirectory(prefix="comfyver-installsteps-") as tmp:
            locked_source.place(loc, Path(tmp) / "node", what)
            files, large = dir_files(Path(tmp) / "node")
    result = read_tree(files, large)
    atomic_write_json(cache, result.to_json())
    return result


# ---------------------------------------------------------------- against the version's Python lock


def _names(reqs: list[str]) -> set[str]:
    return {canonicalize_name(r.name) for t in reqs if (r := _requirement(t)) is not None}


def _core_requirements(lock: Lock) -> list[str]:
    from comfyver.sources import gitsource

    core = lock["comfyui"]["locked"]
    repo = gitsource.fetch(core["url"], core["rev"], f"comfyui ({lock['id']})")
    p = gitsource.git("show", f"{core['rev']}:requirements.txt", cwd=repo, check=False)
    return parse_requirements(p.stdout.decode("utf-8", errors="replace"))[0] if p.returncode == 0 else []


def _has(req: str, declared: set[str]) -> bool:
    r = _requirement(req)
    if r is None or r.url:
        return False
    name = canonicalize_name(r.name)
    if name in OPENCV:  # the Python lock keeps one OpenCV (headless; contrib where any pack asked for contrib)
        have = declared & set(OPENCV)
        return bool(have) and ("contrib" not in name or any("contrib" in h for h in have))
    return name in declared


def report(pack: str, step: InstallStep, declared: set[str]) -> StepReport:
    missing = [r for r in step.would_install if not _has(r, declared)]
    return {"pack": pack, "file": step.file, "kind": step.kind, "would_install": step.would_install,
            "requirement_files": step.requirement_files, "downloads": step.downloads, "unknown": step.unknown,
            "missing": missing,
            "satisfied": not missing and not step.installs_unknown and step.unreadable is None,
            "unreadable": step.unreadable, "truncated": step.truncated}


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _pip_flag(req: str) -> str:
    return f"--pip '{req}'" if "'" not in req else "--pip " + shlex.quote(req)


def note(r: StepReport, vid: str) -> str:
    """The lock's note for one install step."""
    what = {"script": "is not run by comfyver",
            "prestartup": "pip-installs at every ComfyUI start; comfyver does not run it",
            "requirements": "is a requirements file comfyver does not read (it reads requirements.txt)"}[r["kind"]]
    head = f"node {r['pack']}: {r['file']} {what}"
    if r["unreadable"]:
        return f"{head}; it could not be read ({r['unreadable']}): read it to see what it installs"
    parts = []
    if r["would_install"]:
        parts.append(f"It would pip-install {_few(r['would_install'])}"
                     + (f" (from {_few(r['requirement_files'], 3)})" if r["requirement_files"] else ""))
    if r["downloads"]:
        parts.append(f"{'it' if parts else 'It'} names URLs comfyver does not fetch: {_few(r['downloads'], 3)}")
    if r["unknown"]:
        parts.append(f"{'a' if parts else 'A'} static read cannot tell: {_few(r['unknown'], 3)}")
    if not parts:
        return f"{head}; a static read finds nothing it installs or downloads"
    text = f"{head}. " + "; ".join(parts) + (" (the read stopped at a cap: partial)" if r["truncated"] else "") + ". "
    fixable = [m for m in r["missing"] if (q := _requirement(m)) is not None and not q.url]
    if r["satisfied"]:
        return text + "Satisfied: everything it installs is in the version's Python lock"
    if not r["missing"]:
        return text + ("Not satisfied: what it installs at run time is unknown; read the file"
                       if r["would_install"] or r["unknown"] else "").rstrip()
    text += f"Not in the version's Python lock: {_few(r['missing'])}"
    if len(fixable) < len(r["missing"]):
        text += " (a git or URL requirement cannot be pinned with --pip)"
    if fixable:
        text += f"; if the pack needs them: `comfyver lock {vid} {' '.join(_pip_flag(m) for m in fixable[:8])}`"
    return text


def for_lock(lock: Lock) -> tuple[list[StepReport], list[str]]:
    """Every locked pack's install steps compared with the version's Python lock (ComfyUI's requirements, every
    pack's, `python.extra`), and a note for each; a pack that cannot be read is a note, never an error."""
    packs: dict[str, PackSteps] = {}
    notes: list[str] = []
    for name, n in sorted(lock.get("nodes", {}).items()):
        try:
            packs[name] = read_locked(name, n["locked"])
        except (ComfyverError, OSError, ValueError, subprocess.SubprocessError) as exc:
            notes.append(f"node {name}: its install steps could not be read ({exc})")
    if not any(p.steps for p in packs.values()):
        return [], notes
    declared = _names(list(lock.get("python", {}).get("extra", [])))
    for p in packs.values():
        declared |= _names(p.declared)
    try:
        declared |= _names(_core_requirements(lock))
    except (ComfyverError, OSError) as exc:
        notes.append(f"install steps: ComfyUI's requirements.txt could not be read ({exc})")
    reports = [report(name, s, declared) for name, p in packs.items() for s in p.steps]
    return reports, notes + [note(r, lock["id"]) for r in reports]
