"""Prove that a realized folder matches its lock (`comfyver verify <id>`).

Quick: the revs and hashes recorded at realize time against the lock, every
folder present, installed Python packages against uv.lock (`uv sync --check`),
every model's size and sha256 (a stat cache skips files unchanged since their
last check). `deep`: every model byte hashed again, the NAR hash of ComfyUI and of every node folder, and the
RECORD hash of every file of every installed Python package. `runtime`: start
ComfyUI and check that /object_info lists every class the version's
workflows use, then the lock's proof (lock/proof.py) against the runtime probe: every
model value among the options its loader input offers.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from comfyver.base import lockfile, nar, project, uvtool
from comfyver.base.lockfile import Lock, Node, NodeLocked
from comfyver.realize import realize
from comfyver.realize.realize import EXTRA_PATHS, MARKER, MODELS_DIR, QUIET, VENV, Reporter
from comfyver.sources import modelstore

# folders ComfyUI creates in its own tree at import (folder_paths makes input/); empty, they
# cannot come from a git checkout, so they are left out of the core's NAR hash
RUNTIME_DIRS = ("input", "output", "temp", "user")
# classes that live only in the ComfyUI frontend, never in /object_info
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


@dataclass
class Mismatch:
    kind: str  # folder | comfyui | node | python | model | runtime | proof
    name: str
    expected: str
    found: str

    def as_dict(self) -> dict:
        return asdict(self)


# -- sources -----------------------------------------------------------------

def nar_hash_without(path: Path, skip: set[str]) -> str:
    """SRI NAR hash of `path` with the relative paths in `skip` left out (the nodes added to ComfyUI)."""
    return nar.to_sri(nar.nar_hash(path, exclude=skip))


def check_sources(lock: Lock, marker: dict, into: Path, deep: bool, rep: Reporter) -> list[Mismatch]:
    out = []
    core = into
    inputs: list[tuple[str, str, NodeLocked, dict, Path]] = [
        ("comfyui", "ComfyUI", lock["comfyui"]["locked"], marker.get("comfyui") or {}, core)]
    for name, node in sorted(lock["nodes"].items()):
        inputs.append(("node", name, node["locked"], (marker.get("nodes") or {}).get(name) or {},
                       core / "custom_nodes" / name))
    for name in sorted(set(marker.get("nodes") or {}) - set(lock["nodes"])):
        out.append(Mismatch("node", name, "not in the lock", "installed"))
    for kind, name, locked, have, folder in inputs:
        # what realize recorded of it: a git source's rev and hash, a zip's hash
        pins = {"rev": locked["rev"], "hash": locked["hash"]} if locked["type"] == "git" else {"hash": locked["hash"]}
        if not folder.is_dir():
            out.append(Mismatch(kind, name, pins.get("rev") or pins["hash"], f"missing folder {folder}"))
            continue
        for key, want in pins.items():
            if have.get(key) != want:
                out.append(Mismatch(kind, name, f"{key} {want}", f"{key} {have.get(key)}"))
                break
        else:
            if deep:
                rep.step(f"NAR hash of {kind} {name}")
                skip = added_to_core(lock, marker, folder) if kind == "comfyui" else set()
                got = nar_hash_without(folder, skip)
                if got != locked["hash"]:
                    out.append(Mismatch(kind, name, locked["hash"], f"{got} ({changed_hint(folder, skip)})"))
    if "custom_nodes" in marker.get("coreAdded", []) and (core / "custom_nodes").is_dir():
        for entry in sorted(os.listdir(core / "custom_nodes")):  # the core has none of its own: all must be locked
            if entry not in lock["nodes"]:
                out.append(Mismatch("node", entry, "not in the lock", "present in custom_nodes"))
    extra = core / EXTRA_PATHS
    if core.is_dir() and (not extra.is_file() or extra.read_text() != realize.extra_model_paths(lock)):
        out.append(Mismatch("comfyui", EXTRA_PATHS, "the model folders of the lock", "missing or edited"))
    return out


def added_to_core(lock: Lock, marker: dict, core: Path) -> set[str]:
    """Paths in the ComfyUI tree that realize added (left out of the core's NAR hash)."""
    skip = {f"custom_nodes/{n}" for n in lock["nodes"]} | {f"{MODELS_DIR}/{k}" for k in lock["models"]}
    skip |= {EXTRA_PATHS, VENV, MARKER} | set(marker.get("coreAdded", []))
    return skip | {d for d in RUNTIME_DIRS if (core / d).is_dir() and not any((core / d).iterdir())}


def changed_hint(folder: Path, skip: set[str] | frozenset[str] = frozenset()) -> str:
    """Name the most recently modified file: usually the tampered one."""
    newest, when = None, -1.0
    for d, dirs, files in os.walk(folder):
        rel = os.path.relpath(d, folder)
        dirs[:] = [x for x in dirs if os.path.normpath(os.path.join(rel, x)) not in skip]
        for f in files:
            p = os.path.join(d, f)
            if os.path.normpath(os.path.join(rel, f)) in skip:
                continue
            m = os.lstat(p).st_mtime
            if m > when:
                newest, when = p, m
    return f"newest file: {os.path.relpath(newest, folder)}" if newest else "empty"


# -- python ------------------------------------------------------------------

UV_LINE = re.compile(r"^ ([-+~]) ([A-Za-z0-9._-]+)==(\S+)")


def check_python(root: Path, vid: str, into: Path, deep: bool, rep: Reporter) -> list[Mismatch]:
    venv = into / VENV
    if not (venv / "pyvenv.cfg").is_file():
        return [Mismatch("python", ".venv", "a virtual environment", f"missing {venv}")]
    pyproject, _ = realize.python_inputs(root, vid)
    p = subprocess.run([uvtool.uv_bin(), "sync", "--frozen", "--no-install-project", "--check", "--offline",
                        "--project", str(pyproject.parent)], env=uvtool.uv_env(venv), capture_output=True, text=True)
    out = []
    if p.returncode:
        removed: dict[str, str] = {}
        added: dict[str, str] = {}
        for line in (p.stdout + p.stderr).splitlines():
            if m := UV_LINE.match(line):
                (removed if m[1] == "-" else added)[m[2]] = m[3]
        for name in sorted(set(removed) | set(added)):
            out.append(Mismatch("python", name, added.get(name, "not in uv.lock"), removed.get(name, "not installed")))
        if not out:
            tail = (p.stderr.strip().splitlines() or ["uv sync --check failed"])[-1]
            out.append(Mismatch("python", ".venv", "in sync with uv.lock", tail))
    if deep:
        rep.step("RECORD hashes of installed packages")
        out += check_records(venv)
    return out


def check_records(venv: Path) -> list[Mismatch]:
    """Every file listed with a hash in a dist-info RECORD must still have that hash."""
    out = []
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for record in sorted(site.glob("*.dist-info/RECORD")):
            dist = record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0]
            with open(record, newline="") as f:
                for row in csv.reader(f):
                    if len(row) < 2 or not row[1].startswith("sha256="):
                        continue
                    path = (site / row[0]).resolve()
                    if venv.resolve() not in path.parents:
                        continue
                    want = row[1][7:]
                    try:
                        got = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
                    except FileNotFoundError:
                        got = "missing"
                    if got != want:
                        out.append(Mismatch("python", f"{dist}: {row[0]}", f"sha256={want}",
                                            got if got == "missing" else f"sha256={got}"))
    return out


# -- models ------------------------------------------------------------------

def check_models(lock: Lock, into: Path, rep: Reporter, cache: modelstore.StatCache) -> list[Mismatch]:
    out = []
    total = sum(m["locked"]["size"] for m in lock["models"].values())
    with rep.bytes("models", total) as progress:
        for key, m in sorted(lock["models"].items()):
            locked = m["locked"]
            problem = modelstore.check_file(into / MODELS_DIR / key, locked["sha256"], locked["size"], cache, progress)
            if problem:
                out.append(Mismatch("model", key, f"sha256 {locked['sha256']}, {locked['size']} bytes", problem))
    cache.save()
    return out


# -- runtime -----------------------------------------------------------------

def workflow_classes(root: Path, vid: str, lock: Lock) -> dict[str, str]:
    """class_type -> the workflow file that uses it, as ComfyUI will run it: subgraphs and group nodes
    entered (their instances are not classes), frontend-only, muted and bypassed nodes left out."""
    return {c: rel for c, (rel, _) in _workflow_uses(root, vid, lock).items()}


def _workflow_uses(root: Path, vid: str, lock: Lock) -> dict[str, tuple[str, bool]]:
    """class -> (first workflow using it, whether any use of it is wired to another node)."""
    from comfyver.lock import analyze

    vdir = project.version_dir(root, vid)
    uses: dict[str, tuple[str, bool]] = {}
    for rel in lock["workflows"]:
        for u in analyze.load(vdir / rel).nodes:
            if not u.virtual and u.class_type not in FRONTEND_ONLY and u.mode not in ("muted", "bypassed"):
                first, linked = uses.get(u.class_type, (rel, False))
                uses[u.class_type] = (first, linked or u.linked)
    return uses


def check_runtime(root: Path, vid: str, lock: Lock, into: Path, comfy_args: list[str], rep: Reporter,
                  timeout: float = 300) -> list[Mismatch]:
    import socket

    import requests

    from comfyver.realize import localrun

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rep.step(f"starting ComfyUI on 127.0.0.1:{port}")
    log = localrun.state_dir(vid) / f"verify-runtime-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as logf:
        proc = localrun.start(root, vid, into, ["--listen", "127.0.0.1", "--port", str(port), *comfy_args],
                              stdout=logf, stderr=subprocess.STDOUT)
        try:
            info = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    r = requests.get(f"http://127.0.0.1:{port}/object_info", timeout=10)
                    if r.ok:
                        info = r.json()
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.3)
        finally:
            proc.kill()
            proc.wait()
    if info is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return [Mismatch("runtime", "ComfyUI", "starts and serves /object_info", f"did not start (log {log}: {tail[0]})")]
    out = runtime_mismatches(_workflow_uses(root, vid, lock), info, _locked_pack_listings(lock))
    rep.step("the lock's proof (runtime probe: model values among their loaders' options)")
    return out + proof_mismatches(root, vid, lock, into, {m.name for m in out})


def proof_mismatches(root: Path, vid: str, lock: Lock, into: Path,
                     named: set[str] | frozenset[str] = frozenset()) -> list[Mismatch]:
    """The proof `lock` runs (lock/proof.py) against the runtime probe of the realized folder (cached by core rev,
    node hashes and uv.lock digest): a model value its loader input does not offer, a class not registered (one
    /object_info already lacks, `named`, is not said twice)."""
    from comfyver.lock import analyze, probe, proof

    vdir = project.version_dir(root, vid)
    result = probe.for_version(lock, (vdir / "uv.lock").read_bytes(), into)
    wfs = [analyze.load(vdir / rel) for rel in lock["workflows"]]
    found = proof.prove(lock, wfs, proof.from_probe(result), {str(vdir / w): w for w in lock["workflows"]})
    return [Mismatch("proof", p.item, p.fix, p.problem) for p in found
            if not (p.kind == "class-not-registered" and p.class_type in named)]


def runtime_mismatches(uses: dict[str, tuple[str, bool]], info: dict, listings: set[str]) -> list[Mismatch]:
    """Classes the workflows run that /object_info lacks. A class listed for a locked pack whose every use is
    wired to nothing is that pack's frontend-only (JS) node: the workflow runs without it."""
    return [Mismatch("runtime", cls, f"class used by {wf}", "not in /object_info")
            for cls, (wf, linked) in sorted(uses.items()) if cls not in info and (linked or cls not in listings)]


def _locked_pack_listings(lock: Lock) -> set[str]:
    """Every class ComfyUI-Manager's node map lists for the version's locked packs."""
    from comfyver.lock import nodemap

    mgr = nodemap.manager()
    urls = {nodemap.norm_url(_pack_url(n)) for n in lock["nodes"].values()}
    return {c for u, classes in mgr.by_url.items() if nodemap.norm_url(u) in urls for c in classes}


def _pack_url(n: Node) -> str:
    """A node pack's URL: its git original's (as the user gave it), else the locked one."""
    orig = n.get("original")
    return (orig["url"] if orig and orig["type"] == "git" else "") or n["locked"].get("url") or ""


# -- all ---------------------------------------------------------------------

def verify(root: Path, vid: str, into: Path | None = None, *, deep: bool = False, runtime: bool = False,
           comfy_args: list[str] | None = None, reporter: Reporter = QUIET) -> list[Mismatch]:
    """Every way the folder differs from the lock of `vid`; empty when it matches."""
    rep = reporter
    lock = lockfile.read(project.lock_path(root, vid))
    into = Path(into or realize.default_into(vid)).absolute()
    marker = realize.read_marker(into)
    if marker is None:
        return [Mismatch("folder", str(into), f"a realized version {vid}", f"no {realize.MARKER} (not realized)")]
    out = []
    if marker.get("id") != vid:
        out.append(Mismatch("folder", str(into), f"version {vid}", f"version {marker.get('id')}"))
    out += check_sources(lock, marker, into, deep, rep)
    out += check_python(root, vid, into, deep, rep)
    out += check_models(lock, into, rep, modelstore.StatCache(rehash=deep))  # deep: every model byte again
    if runtime and not out:
        out += check_runtime(root, vid, lock, into, comfy_args or [], rep)
    return out
