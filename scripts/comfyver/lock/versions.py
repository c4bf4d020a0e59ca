"""Version operations on versions/<id>/: create, add inputs, clone, delete, diff, update.

Every write goes through `save()`: validated against the schema, then written
atomically (temp file + rename). Folder-level operations (clone, delete) build
or move whole folders under temp names first. Every verb that writes a version
holds its writer lock (`writing()`) from load to save: one writer per version.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NotRequired, ParamSpec, TypedDict, TypeVar, cast

from filelock import FileLock, Timeout

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import GitLocked, GitOriginal, Lock, Model, ModelLocked, Node, NodeLocked, Python
from comfyver.sources import resolve

DEFAULT_COMFYUI_URL = "https://github.com/comfyanonymous/ComfyUI"
# The version's Python project (pylock writes it): the same name in every version, so a version's Python env
# (built from its pyproject.toml + uv.lock only) is one store path for every version with the same packages.
PROJECT_NAME = "comfyver-version"
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Locked = GitLocked | NodeLocked | ModelLocked  # one locked input: the core, a node, a model
# what `diff` and `update` print ("from" is a keyword: the functional form)
Change = TypedDict("Change", {"from": str, "to": str})
ProfileChange = TypedDict("ProfileChange", {"from": Python, "to": Python})


class MapDiff(TypedDict):
    """One section of `diff`: keys added, removed, and changed (from one pin to another)."""
    added: list[str]
    removed: list[str]
    changed: dict[str, Change]
    moved: NotRequired[dict[str, Change]]     # nodes: another URL
    profile: NotRequired[ProfileChange]       # python: another requires/torch/platforms


class Diff(TypedDict):
    """`comfyver diff a b --json`."""
    a: str
    b: str
    comfyui: Change | dict[str, str]          # {} when the core is the same
    nodes: MapDiff
    models: MapDiff
    python: MapDiff


def _check_argument_url(url: str | None, what: str) -> None:
    """A URL given on the command line that the lock could not hold is the argument's fault, named as such
    (not a later complaint about version.json)."""
    if url:
        try:
            lockfile.check_url_has_no_secret(url)
        except ValueError as exc:
            raise UsageError(f"{what}: {exc}", hint="tokens come from the environment (HF_TOKEN, CIVITAI_TOKEN), "
                             "never from a URL") from None


def writer_lock_path(root: Path, vid: str) -> Path:
    return project.version_dir(root, vid).parent / f".{vid}.lock"


@contextlib.contextmanager
def writing(root: Path, vid: str) -> Iterator[None]:
    """Hold version `vid`'s writer lock: wait for another writer (saying so), or fail at once with
    $COMFYVER_NO_WAIT (`comfyver --no-wait`)."""
    path = writer_lock_path(root, vid)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if os.environ.get("COMFYVER_NO_WAIT"):
            raise ComfyverError(f"version {vid}: another comfyver is changing it right now (lock {path})",
                                hint="run again when it is done, or without --no-wait to wait for it") from None
        print(f"version {vid}: waiting for another comfyver that is changing it ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def one_writer(arg: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function under the writer lock of the version id in positional argument `arg`
    (the project root is argument 0)."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kw: P.kwargs) -> R:
            with writing(cast(Path, args[0]), cast(str, args[arg])):
                return fn(*args, **kw)
        return inner
    return wrap


def load(root: Path, vid: str) -> Lock:
    data = lockfile.read(project.lock_path(root, vid))
    if data["id"] != vid:
        raise lockfile.LockError(f"{project.lock_path(root, vid)}: $.id: is {data['id']!r} but the folder is {vid!r}",
                                 hint="the id must equal the folder name under versions/")
    return data


def save(root: Path, vid: str, data: Lock) -> None:
    lockfile.write(project.lock_path(root, vid), data)


def exists(root: Path, vid: str) -> bool:
    return project.lock_path(root, vid).exists()


@one_writer()
def create(root: Path, vid: str, comfyui_ref: str = "latest", comfyui_url: str = DEFAULT_COMFYUI_URL,
           jobs: int = resolve.DEFAULT_JOBS) -> Lock:
    if exists(root, vid):
        raise UsageError(f"version {vid!r} already exists at {project.version_dir(root, vid)}",
                         hint="pick another id, or `comfyver delete` it first")
    original: GitOriginal = {"type": "git", "url": comfyui_url, "ref": comfyui_ref}
    locked = cast(GitLocked, resolve.lock_items([resolve.Item("comfyui", "git", original)], jobs=jobs)["comfyui"])
    data = lockfile.empty(vid, original, locked)
    save(root, vid, data)
    return data


@one_writer()
def add_node(root: Path, vid: str, spec: str, name: str | None = None, submodules: bool = False,
             replace: bool = False) -> tuple[str, Node]:
    data = load(root, vid)
    derived, original = resolve.parse_node_spec(spec, submodules)
    _check_argument_url(original["url"] if original["type"] == "git" else None,
                        f"add-node {spec.split('@')[0] if '://' not in spec else 'URL'}")
    name = name or derived
    if name == "comfyui" or not lockfile.NODE_NAME_RE.match(name):
        raise UsageError(f"{name!r} cannot be a node name",
                         hint="pass --name with letters, digits, '.', '_' or '-' (not 'comfyui')")
    if name in data["nodes"] and not replace:
        raise UsageError(f"version {vid!r} already has a node named {name!r}",
                         hint="use --replace, or --name to pick another name")
    locked = cast(NodeLocked, resolve.lock_items([resolve.Item(f"nodes.{name}", resolve.kind_of(original), original)])[
        f"nodes.{name}"])
    entry: Node = {"original": original, "locked": locked}
    if name in data["nodes"]:
        entry = {**data["nodes"][name], **entry}
    data["nodes"][name] = entry
    data["nodes"] = dict(sorted(data["nodes"].items()))
    save(root, vid, data)
    return name, entry


@one_writer()
def add_model(root: Path, vid: str, path: str, source: str, sha256: str | None = None, replace: bool = False) -> Model:
    data = load(root, vid)
    try:
        lockfile.check_model_path(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if path in data["models"] and not replace:
        raise UsageError(f"version {vid!r} already has a model at {path!r}", hint="use --replace to change its source")
    original = resolve.parse_model_source(source, sha256)
    _check_argument_url(original.get("url"), f"add-model {path}: source")
    locked = cast(ModelLocked, resolve.lock_items([resolve.Item(f"models.{path}", "model", original)])[f"models.{path}"])
    data["models"][path] = {"original": original, "locked": locked}
    data["models"] = dict(sorted(data["models"].items()))
    save(root, vid, data)
    return data["models"][path]


@one_writer(2)
def clone(root: Path, src: str, dst: str) -> Lock:
    data = load(root, src)
    if exists(root, dst) or project.version_dir(root, dst).exists():
        raise UsageError(f"version {dst!r} already exists", hint="pick another id")
    vroot = root / "versions"
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst}.", dir=vroot))
    try:
        shutil.copytree(project.version_dir(root, src), tmp, dirs_exist_ok=True)
        data["id"] = dst
        lockfile.write(tmp / "version.json", data)
        _rename_python_project(tmp, src, dst)
        tmp.rename(project.version_dir(root, dst))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return data


def _rename_python_project(vdir: Path, src: str, dst: str) -> None:
    """Versions locked before the project name lost the id (`comfyver-version-<id>`) get today's name, which no
    id is in (`PROJECT_NAME`): a clone must not carry the source's id into its Python env."""
    from packaging.utils import canonicalize_name

    pairs = [(f'"comfyver-version-{src}"', f'"{PROJECT_NAME}"'),
             (f'"{canonicalize_name("comfyver-version-" + src)}"', f'"{PROJECT_NAME}"')]
    for name in ("pyproject.toml", "uv.lock"):
        f = vdir / name
        if f.is_file():
            text = f.read_text()
            for a, b in pairs:
                text = text.replace(a, b)
            f.write_text(text)


@one_writer()
def delete(root: Path, vid: str) -> None:
    vdir = project.version_dir(root, vid)
    if not vdir.is_dir():
        raise ComfyverError(f"no version {vid!r} in {root / 'versions'}", hint="`comfyver list` shows the versions")
    trash = vdir.with_name(f".{vid}.deleting")
    shutil.rmtree(trash, ignore_errors=True)
    vdir.rename(trash)  # atomic: the version disappears at once
    shutil.rmtree(trash)


def python_packages(root: Path, vid: str) -> dict[str, str]:
    """name -> version from versions/<id>/uv.lock (empty if there is none yet)."""
    p = project.version_dir(root, vid) / "uv.lock"
    if not p.exists():
        return {}
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ComfyverError(f"{p}: not valid TOML: {exc}") from None
    return {pkg["name"]: str(pkg.get("version", "")) for pkg in doc.get("package", []) if "name" in pkg}


def _input_id(locked: Mapping[str, object]) -> str:
    """What pins a locked input: a git commit, an archive's NAR hash, a model's sha256."""
    return str(locked.get("rev") or locked.get("hash") or locked.get("sha256") or "")


def _diff_map(a: Mapping[str, T], b: Mapping[str, T], ident: Callable[[T], str]) -> MapDiff:
    out: MapDiff = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)), "changed": {}}
    for k in sorted(set(a) & set(b)):
        if ident(a[k]) != ident(b[k]):
            out["changed"][k] = {"from": ident(a[k]), "to": ident(b[k])}
    return out


def diff(root: Path, va: str, vb: str) -> Diff:
    a, b = load(root, va), load(root, vb)
    core: Change | dict[str, str] = {}
    if (a["comfyui"]["locked"]["rev"] != b["comfyui"]["locked"]["rev"]
            or a["comfyui"]["locked"]["url"] != b["comfyui"]["locked"]["url"]):
        core = {"from": a["comfyui"]["locked"]["rev"], "to": b["comfyui"]["locked"]["rev"]}
    nodes = _diff_map(a["nodes"], b["nodes"], lambda n: _input_id(n["locked"]))
    # a node whose source moved (another URL or registry id) is reported as moved
    nodes["moved"] = {k: {"from": a["nodes"][k]["locked"]["url"], "to": b["nodes"][k]["locked"]["url"]}
                      for k in set(a["nodes"]) & set(b["nodes"])
                      if a["nodes"][k]["locked"]["url"] != b["nodes"][k]["locked"]["url"]}
    models = _diff_map(a["models"], b["models"], lambda m: m["locked"]["sha256"])
    python = _diff_map(python_packages(root, va), python_packages(root, vb), lambda v: v)
    if a["python"] != b["python"]:
        python["profile"] = {"from": a["python"], "to": b["python"]}
    return {"a": va, "b": vb, "comfyui": core, "nodes": nodes, "models": models, "python": python}


def inputs_of(data: Lock) -> dict[str, resolve.Item]:
    """Every input of a lock as the item that resolves it. Keys: comfyui, <node name>, <model path>."""
    out = {"comfyui": resolve.Item("comfyui", "git", data["comfyui"]["original"])}
    for name, n in data["nodes"].items():
        out[name] = resolve.Item(name, resolve.kind_of(n["original"]), n["original"])
    for path, m in data["models"].items():
        out[path] = resolve.Item(path, "model", m["original"], untrusted=lockfile.from_workflow(m))
    return out


@one_writer()
def update(root: Path, vid: str, names: list[str] | None = None, jobs: int = resolve.DEFAULT_JOBS) -> dict[str, Change]:
    """Re-resolve the `original` of the named inputs (all if none); return {key: {from, to}} of what moved."""
    data = load(root, vid)
    inputs = inputs_of(data)
    unknown = [n for n in names or [] if n not in inputs]
    if unknown:
        raise UsageError(f"version {vid!r} has no input named {', '.join(map(repr, unknown))}",
                         hint="inputs are: " + ", ".join(inputs))
    chosen = names or list(inputs)
    locked = resolve.lock_items([inputs[k] for k in chosen], jobs=jobs)
    changes: dict[str, Change] = {}
    for key, new in locked.items():
        old: Locked = (data["comfyui"]["locked"] if key == "comfyui" else
                       data["nodes"][key]["locked"] if key in data["nodes"] else data["models"][key]["locked"])
        if old == new:
            continue
        changes[key] = {"from": _input_id(old), "to": _input_id(new)}
        if key == "comfyui":  # each input resolves to a locked entry of its own kind
            data["comfyui"]["locked"] = cast(GitLocked, new)
        elif key in data["nodes"]:
            data["nodes"][key]["locked"] = cast(NodeLocked, new)
        else:
            data["models"][key]["locked"] = cast(ModelLocked, new)
    if changes:
        save(root, vid, data)
    return changes


def _recheck_source(locked: NodeLocked, what: str) -> None:
    """Fetch a locked core or node by its pin alone and recompute its hash; raise on any difference."""
    from comfyver.sources import locked as locked_source

    try:
        locked_source.recheck(locked, what)
    except locked_source.HashMismatch as exc:
        if locked["type"] == "git":
            raise ComfyverError(f"{what}: hash mismatch for {locked['url']} at {locked['rev']}: lock has {locked['hash']}, "
                                f"the source gives {exc.got}",
                                hint="someone edited the lock, or the pin is wrong; re-lock with `comfyver update`") from None
        raise ComfyverError(f"{what}: hash mismatch for {locked['url']}: lock has {locked['hash']}, "
                            f"the archive gives {exc.got}") from None


def _recheck_model(locked: ModelLocked, what: str) -> None:
    """Download a locked model afresh; its sha256 and size are checked on the way."""
    from comfyver.sources import download

    with tempfile.TemporaryDirectory(prefix="comfyver-recheck-") as tmp:
        download.download(locked["url"], Path(tmp) / "model", sha256=locked["sha256"], size=locked["size"], what=what)


def recheck(root: Path, vid: str, names: list[str] | None = None, jobs: int = resolve.DEFAULT_JOBS) -> dict[str, str]:
    """Re-fetch every (or each named) locked input by its pin and re-hash it. Returns key -> problem."""
    from concurrent.futures import ThreadPoolExecutor

    data = load(root, vid)
    sources: dict[str, NodeLocked] = {"comfyui": data["comfyui"]["locked"]}
    sources.update({k: n["locked"] for k, n in data["nodes"].items()})
    models = {k: m["locked"] for k, m in data["models"].items()}
    untrusted = {k for k, m in data["models"].items() if lockfile.from_workflow(m)}
    unknown = [n for n in names or [] if n not in sources and n not in models]
    if unknown:
        raise UsageError(f"version {vid!r} has no input named {', '.join(map(repr, unknown))}")
    problems: dict[str, str] = {}

    def one(key: str) -> None:
        try:
            with web.untrusted_fetches() if key in untrusted else contextlib.nullcontext():
                if key in models:
                    _recheck_model(models[key], key)
                else:
                    _recheck_source(sources[key], key)
        except ComfyverError as exc:
            problems[key] = exc.message.removeprefix(f"{key}: ") + (f" (hint: {exc.hint})" if exc.hint else "")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, names or [*sources, *models]))
    return problems
