"""Materialize a locked version into a folder without Nix.

The result (`<into>`, default `<cache>/realized/<id>`) is a ComfyUI tree, the
layout ComfyUI and the handler (COMFY_HOME) expect:

    <into>/                       core at its locked rev, NAR-verified (main.py, comfy/, ...)
    custom_nodes/<name>/          every node (git rev or registry zip), NAR-verified
    models/<folder>/<name>        symlinks into the shared store <models>/sha256/<hex>
    extra_model_paths.yaml        registers every model folder of the version (ComfyUI loads it)
    .venv/                        `uv sync --frozen` of versions/<id>/uv.lock (relocatable)
    .comfyver-realized.json       what was realized (lock digest, revs, hashes, what was added)

Everything is built in a temp folder beside `<into>` and renamed into place, so
a killed realize leaves either the previous complete folder or nothing. A
realize whose marker matches the lock (and uv.lock and model store) only
re-checks the models through the stat cache: a no-op in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from comfyver.base import lockfile, project, ui, uvtool, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_json, atomic_write_text
from comfyver.base.lockfile import Lock, NodeLocked
from comfyver.sources import locked as locked_source
from comfyver.sources import modelstore

MARKER = ".comfyver-realized.json"
MODELS_DIR = "models"
VENV = ".venv"
EXTRA_PATHS = "extra_model_paths.yaml"


def default_into(vid: str) -> Path:
    return project.cache_dir() / "realized" / lockfile.check_version_id(vid)


class Reporter:
    """Human progress on stderr (rich), or nothing when quiet."""

    def __init__(self, quiet: bool = True):
        self.console = None
        if not quiet:
            from rich.console import Console

            self.console = Console(stderr=True)

    def step(self, msg: str) -> None:
        if self.console:
            self.console.print(f"[bold]•[/] {ui.text(web.redact(msg))}")

    @contextmanager
    def bytes(self, label: str, total: int):
        if not self.console:
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=self.console, transient=True) as bar:
            task = bar.add_task(ui.text(label), total=total)
            yield lambda n: bar.advance(task, n)


QUIET = Reporter()


def _sha256_file(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def python_inputs(root: Path, vid: str) -> tuple[Path, Path]:
    """versions/<id>/pyproject.toml and uv.lock, or an error saying how to make them."""
    vdir = project.version_dir(root, vid)
    pyproject, uvlock = vdir / "pyproject.toml", vdir / "uv.lock"
    for f in (pyproject, uvlock):
        if not f.is_file():
            raise ComfyverError(f"version {vid}: {f} is missing; the Python environment is not locked",
                                hint=f"lock it with `comfyver lock {vid}` (it writes pyproject.toml and uv.lock)")
    return pyproject, uvlock


def stamp(root: Path, vid: str, lock: Lock, store: Path) -> dict:
    """What a realized folder must have been built from to count as up to date."""
    pyproject, uvlock = python_inputs(root, vid)
    return {"id": vid, "lock": lockfile.lock_digest(lock), "uvLock": _sha256_file(uvlock),
            "pyproject": _sha256_file(pyproject), "modelStore": str(store)}


def read_marker(into: Path) -> dict | None:
    try:
        return json.loads((into / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def choose_python(lock: Lock) -> str:
    """This interpreter if it satisfies the lock's python.requires, else the requirement for uv to find."""
    return uvtool.choose_python(lock["python"]["requires"], f"version {lock['id']}")


# -- sources -----------------------------------------------------------------

def source_record(locked: NodeLocked) -> dict[str, str]:
    """What the marker records of a placed source: its type, hash and (git) rev."""
    rec = {"type": locked["type"], "hash": locked["hash"]}
    if locked["type"] == "git":
        rec["rev"] = locked["rev"]
    return rec


# -- models ------------------------------------------------------------------

def ensure_models(lock: Lock, store: Path, offline: bool, rep: Reporter,
                  cache: modelstore.StatCache) -> dict[str, Path]:
    blobs = {}
    for key, m in sorted(lock["models"].items()):
        locked = m["locked"]
        blob = modelstore.blob_path(store, locked["sha256"])
        if modelstore.check_blob(blob, locked["sha256"], locked["size"], cache) is not None:
            rep.step(f"model {key} ({locked['size']} bytes) from {web.redact(locked['url'])}")
        with rep.bytes(key, locked["size"]) as progress:
            blobs[key] = modelstore.ensure(store, key, locked, offline=offline, cache=cache, progress=progress,
                                           untrusted=lockfile.from_workflow(m))
    cache.save()
    return blobs


def link_models(blobs: dict[str, Path], tree: Path) -> list[str]:
    """Link `models/<key>` in `tree` to each blob; return the folders this created (relative to `tree`)."""
    created = []
    for key, blob in blobs.items():
        link = tree / MODELS_DIR / key
        for d in reversed(link.relative_to(tree).parents[:-1]):
            if not (tree / d).is_dir():
                (tree / d).mkdir()
                created.append(d.as_posix())
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise ComfyverError(f"model {key}: ComfyUI's own tree already has models/{key}; rename the model in the lock")
        link.symlink_to(blob.resolve())
    return created


def extra_model_paths(lock: Lock) -> str:
    """YAML for ComfyUI: every model folder of the version under models/ (relative to the yaml)."""
    folders = sorted({key.split("/", 1)[0] for key in lock["models"]})
    lines = ["# written by comfyver realize: every model folder of this version, under models/", "comfyver:",
             f"  base_path: {MODELS_DIR}", "  is_default: true"]
    lines += [f"  {json.dumps(f)}: {json.dumps(f)}" for f in folders]
    return "\n".join(lines) + "\n"


# -- python ------------------------------------------------------------------

def build_venv(root: Path, vid: str, lock: Lock, venv: Path, *, offline: bool, system_site_packages: bool,
               uv_args: list[str]) -> None:
    pyproject, _ = python_inputs(root, vid)
    what = f"version {vid}: python environment"
    python = choose_python(lock)
    uvtool.make_venv(venv, python, what, system_site_packages=system_site_packages)
    if system_site_packages and python == sys.executable and sys.prefix != sys.base_prefix:
        _see_running_venv(venv)
    uvtool.sync(pyproject.parent, venv, what, offline=offline, uv_args=uv_args)


def _see_running_venv(venv: Path) -> None:
    """comfyver runs in a virtual environment: "system" packages are that environment's, not the bare
    interpreter's (uv's --system-site-packages would skip them). A .pth adds them after the .venv's own."""
    import site

    own = next((venv / "lib").glob("python3*/site-packages"))
    atomic_write_text(own / "_comfyver_system_site.pth", "".join(p + "\n" for p in site.getsitepackages()))


# -- the whole thing ---------------------------------------------------------

def _clean_leftovers(into: Path) -> None:
    for p in into.parent.glob(f".{into.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in into.parent.glob(f".{into.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _swap_into_place(tmp: Path, into: Path) -> None:
    if into.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{into.name}.old-", dir=into.parent))
        os.rename(into, old / "x")
        os.rename(tmp, into)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, into)


def store_folder(models_dir: Path | None) -> Path:
    """The model store folder (--models-dir, $COMFYVER_MODELS, <cache>/models); a file there is an error."""
    store = Path(models_dir or modelstore.default_store()).absolute()
    if store.exists() and not store.is_dir():
        raise UsageError(f"--models-dir {store}: is a file, not a folder", hint="give a folder for the model store")
    return store


def realize(root: Path, vid: str, into: Path | None = None, models_dir: Path | None = None,
            offline: bool = False, *, system_site_packages: bool = False, uv_args: list[str] | None = None,
            rehash: bool = False, with_models: bool = True, reporter: Reporter = QUIET) -> Path:
    """Make `into` hold exactly version `vid` of the project at `root`; return the folder.
    `with_models=False`: no model is fetched or linked (`comfyver ui`: the page only needs their names)."""
    rep = reporter
    lock = lockfile.read(project.lock_path(root, vid))
    into = Path(into or default_into(vid)).absolute()
    store = store_folder(models_dir)
    want = {**stamp(root, vid, lock, store), "systemSitePackages": system_site_packages}
    if not with_models:
        want["withModels"] = False  # absent (older markers) means with models
    cache = modelstore.StatCache(rehash=rehash)

    def models_into(tree: Path) -> list[str]:
        return link_models(ensure_models(lock, store, offline, rep, cache), tree) if with_models else []
    into.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(into.parent / f".{into.name}.lock")):
        have = read_marker(into)
        if have and all(have.get(k) == v for k, v in want.items()) and have.get("withModels", True) == with_models:
            models_into(into)  # stat-cached: cheap when unchanged
            rep.step(f"version {vid} is already realized at {into}")
            return into
        if into.exists() and have is None and (not into.is_dir() or any(into.iterdir())):
            raise ComfyverError(f"version {vid}: refusing to replace {into}: it was not made by `comfyver realize`",
                                hint="choose an empty or new folder with --into")
        _clean_leftovers(into)
        tmp = Path(tempfile.mkdtemp(prefix=f".{into.name}.tmp-", dir=into.parent))
        os.chmod(tmp, 0o755)
        try:
            rep.step(f"ComfyUI {lock['comfyui']['locked']['rev'][:12]}")
            locked_source.place(lock["comfyui"]["locked"], tmp, f"version {vid}: comfyui", offline=offline)
            for name in (EXTRA_PATHS, VENV, MARKER):
                if (tmp / name).exists():
                    raise ComfyverError(f"version {vid}: the ComfyUI tree itself has {name}; realize cannot add its own")
            added = [] if (tmp / "custom_nodes").is_dir() else ["custom_nodes"]
            node_records: dict[str, dict[str, str]] = {}
            sources = {"comfyui": source_record(lock["comfyui"]["locked"]), "nodes": node_records}
            for name, node in sorted(lock["nodes"].items()):
                dest = tmp / "custom_nodes" / name
                what = f"version {vid}: node {name}"
                if dest.exists() or dest.is_symlink():
                    raise ComfyverError(f"{what}: ComfyUI already has custom_nodes/{name}; rename the node in the lock")
                rep.step(f"node {name}")
                locked_source.place(node["locked"], dest, what, offline=offline)
                node_records[name] = source_record(node["locked"])
            added += models_into(tmp)
            atomic_write_text(tmp / EXTRA_PATHS, extra_model_paths(lock))
            rep.step("python environment (uv sync --frozen)")
            build_venv(root, vid, lock, tmp / VENV, offline=offline,
                       system_site_packages=system_site_packages, uv_args=uv_args or [])
            atomic_write_json(tmp / MARKER, {**want, **sources, "coreAdded": added, "models": {
                k: m["locked"]["sha256"] for k, m in lock["models"].items()} if with_models else {}})
            _swap_into_place(tmp, into)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    rep.step(f"realized version {vid} at {into}")
    return into


def fetch(root: Path, vid: str, models_dir: Path | None = None, *, uv_args: list[str] | None = None,
          reporter: Reporter = QUIET) -> dict:
    """Fill the caches (git objects, node archives, wheels, models) so `realize --offline` works."""
    rep = reporter
    lock = lockfile.read(project.lock_path(root, vid))
    store = store_folder(models_dir)
    rep.step("git sources")
    locked_source.fetch(lock["comfyui"]["locked"], f"version {vid}: comfyui")
    for name, node in sorted(lock["nodes"].items()):
        locked_source.fetch(node["locked"], f"version {vid}: node {name}")
    ensure_models(lock, store, False, rep, modelstore.StatCache())
    rep.step("wheels (uv sync --frozen into a scratch environment)")
    with tempfile.TemporaryDirectory(prefix="comfyver-fetch-") as tmp:
        build_venv(root, vid, lock, Path(tmp) / ".venv", offline=False, system_site_packages=False,
                   uv_args=uv_args or [])
    return {"id": vid, "nodes": len(lock["nodes"]), "models": len(lock["models"]), "modelStore": str(store)}
