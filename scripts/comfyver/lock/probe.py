"""The runtime probe: what ComfyUI's own node loading registers, the ground truth for `provides` and model folders.

`run(comfyui, packs, python)` copies ComfyUI and the packs into a scratch folder (packs write config files
into themselves when imported; a realized tree must stay as locked), runs `probe_main.py` there with the
given interpreter on the CPU, and returns:

    {"core_seconds", "seconds", "python",
     "packs":   {pack: {"ok", "error", "seconds", "classes": [...]}},
     "classes": {class: {"pack", "model_inputs": [[input, folder], ...], "input_folders": {input: [[prefix, folder], ...]},
                         "folders_called": [...], "error"?}}}

`for_version` runs it on a realized version (its `.venv`), cached by (core rev, node hashes, uv.lock digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NotRequired, TypedDict, cast

from comfyver.base import project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_json
from comfyver.base.lockfile import Lock
from comfyver.lock import versions

PROBE_VERSION = 4  # 2: input_folders (every [prefix, folder] an input lists); 3: required_links; 4: missing_modules
TOP_SKIP = {"models", ".venv", "output", "input", "temp", "user", "custom_nodes"}  # only at ComfyUI's top level


class PackResult(TypedDict):
    """One pack as ComfyUI's node loading met it (probe_main)."""
    ok: bool
    error: str | None
    seconds: float
    classes: list[str]                       # the classes it added
    missing_modules: NotRequired[list[str]]  # top-level modules it asked for that the environment lacks


class ClassResult(TypedDict):
    """One registered class (probe_main)."""
    pack: str                                # "comfy-core" for the core's
    model_inputs: list[list[str]]            # [[input, folder], ...]
    input_folders: dict[str, list[list[str]]]  # input -> [[prefix, folder], ...]
    folders_called: list[str]
    required_links: NotRequired[list[str]]   # required inputs only a link fills (MODEL, IMAGE, ...)
    error: NotRequired[str]


class ProbeResult(TypedDict):
    """What `run` returns (the shape the module docstring shows); `key` and `cached` where it was cached."""
    core_seconds: float
    packs: dict[str, PackResult]
    classes: dict[str, ClassResult]
    seconds: float
    python: str
    key: NotRequired[str]
    cached: NotRequired[bool]


class Finding(TypedDict):
    """A difference between the lock and the probe (`compare`)."""
    node: str
    kind: str                                # not-loaded | import-failed | not-registered | unrecorded
    detail: str


def _skip(top: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        out = {n for n in names if n in (".git", "__pycache__")}
        return out | (set(names) & TOP_SKIP if Path(folder) == top else set())
    return ignore


def run(comfyui: Path, packs: list[Path], python: str | None = None, timeout: float = 900) -> ProbeResult:
    """Probe ComfyUI at `comfyui` with the node packs `packs` (folders), in `python` (default: this one)."""
    with tempfile.TemporaryDirectory(prefix="comfyver-probe-") as tmp:
        core = Path(tmp) / "ComfyUI"
        shutil.copytree(comfyui, core, symlinks=True, ignore=_skip(Path(comfyui)))
        (core / "custom_nodes").mkdir()
        for pack_dir in packs:
            shutil.copytree(pack_dir, core / "custom_nodes" / Path(pack_dir).name, symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "__pycache__"))
        # ComfyUI's own order (os.listdir): a pack that shadows a module name affects the packs after it
        copies = [str(core / "custom_nodes" / n) for n in os.listdir(core / "custom_nodes")]
        (core / "extra_model_paths.yaml").unlink(missing_ok=True)
        out = Path(tmp) / "probe.json"
        # pack code is untrusted: it runs without the user's credentials
        env = web.untrusted_env(os.environ)
        env.update({"CUDA_VISIBLE_DEVICES": "", "PYTHONDONTWRITEBYTECODE": "1", "HOME": tmp})
        t0 = time.perf_counter()
        try:
            p = subprocess.run([python or sys.executable, str(Path(__file__).with_name("probe_main.py")), str(core),
                                str(out), *copies], cwd=core, env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ComfyverError(f"probe of {comfyui}: ComfyUI's node loading did not finish in {timeout:.0f} s") from None
        if p.returncode != 0 or not out.is_file():
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-40:])
            raise ComfyverError(f"probe of {comfyui}: ComfyUI's node loading failed (exit {p.returncode}):\n{tail}",
                                hint="the version's environment must import ComfyUI; `comfyver verify <id> --deep`")
        result = cast(ProbeResult, json.loads(out.read_text()))  # probe_main's, the shape above
        for pack in result["packs"].values():  # import errors may quote tokens from the environment
            pack["error"] = web.redact(pack["error"]) if pack.get("error") else pack.get("error")
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["python"] = python or sys.executable
        return result


def cache_key(lock: Lock, uv_lock: bytes) -> str:
    parts = [f"v{PROBE_VERSION}", lock["comfyui"]["locked"]["rev"], hashlib.sha256(uv_lock).hexdigest()]
    for name, n in sorted(lock.get("nodes", {}).items()):
        parts.append(f"{name}={n['locked'].get('hash') or n['locked'].get('rev')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _cache_file(key: str) -> Path:
    return project.cache_dir() / "probe" / f"{key}.json"


LOCK_PROOF = "-lock"  # the suffix of the lock's own probe's record (see `record_lock_probe`)


def cached(lock: Lock, uv_lock: bytes) -> ProbeResult | None:
    """The version's probe: of its realized environment (`comfyver probe`, `verify --runtime`) where there is one,
    else the one `lock --probe` proved the lock with (its `python` says which interpreter)."""
    key = cache_key(lock, uv_lock)
    for name in (key, key + LOCK_PROOF):
        try:
            return cast(ProbeResult, json.loads(_cache_file(name).read_text()))
        except (OSError, ValueError):
            continue
    return None


def record_lock_probe(lock: Lock, uv_lock: bytes, result: ProbeResult) -> None:
    """Keep the probe `lock --probe` proved `lock` with for `check` (under the version's key, uv.lock's digest
    included, with a suffix of its own: a probe of the realized version (`for_version`) never takes it for its own)."""
    atomic_write_json(_cache_file(cache_key(lock, uv_lock) + LOCK_PROOF),
                      {k: v for k, v in result.items() if k not in ("key", "cached")} | {"from": "lock --probe"})


def _cached_run(key: str, make: Callable[[], ProbeResult], refresh: bool) -> ProbeResult:
    """The probe result stored under `key`, or `make()`'s, stored; `cached` says which."""
    if not refresh:
        try:
            return cast(ProbeResult, {**json.loads(_cache_file(key).read_text()), "cached": True})
        except (OSError, ValueError):
            pass
    result: ProbeResult = {**make(), "key": key}
    atomic_write_json(_cache_file(key), result)
    return {**result, "cached": False}


def for_version(lock: Lock, uv_lock: bytes, tree: Path, *, refresh: bool = False) -> ProbeResult:
    """Probe a realized version (`tree`: its ComfyUI folder with custom_nodes/ and .venv/), cached."""
    python = tree / ".venv" / "bin" / "python"

    def make() -> ProbeResult:
        if not python.exists():
            raise ComfyverError(f"probe of version {lock['id']}: {tree} has no .venv",
                                hint=f"realize it first: comfyver realize {lock['id']}")
        return run(tree, [tree / "custom_nodes" / name for name in sorted(lock.get("nodes", {}))], str(python))
    return _cached_run(cache_key(lock, uv_lock), make, refresh)


def model_inputs(result: ProbeResult) -> dict[str, list[tuple[str, str]]]:
    """class -> [(input, folder)] as analyze.model_uses takes it."""
    return {c: [(x[0], x[1]) for x in info["model_inputs"]] for c, info in result["classes"].items()}


def compare(lock: Lock, result: ProbeResult) -> list[Finding]:
    """What the lock records against what ComfyUI registered: a pack that failed to import, a class in
    `provides` that is not registered at runtime, a class registered but missing from `provides`."""
    out: list[Finding] = []
    for name, n in sorted(lock.get("nodes", {}).items()):
        p = result["packs"].get(name)
        at = n["locked"]["rev"] if n["locked"]["type"] == "git" else n["locked"]["hash"]
        if p is None:
            out.append({"node": name, "kind": "not-loaded", "detail": "ComfyUI did not try to load it"})
            continue
        if not p["ok"]:
            out.append({"node": name, "kind": "import-failed", "detail": f"at {at}: {p['error']}"})
            continue
        missing = sorted(set(n.get("provides", [])) - set(p["classes"]))
        extra = sorted(set(p["classes"]) - set(n.get("provides", [])))
        if missing:
            out.append({"node": name, "kind": "not-registered", "detail": ", ".join(missing)})
        if extra:
            out.append({"node": name, "kind": "unrecorded", "detail": f"{len(extra)} class(es): {', '.join(extra[:8])}"
                        + (" ..." if len(extra) > 8 else "")})
    return out


@versions.one_writer()
def record(root: Path, vid: str, result: ProbeResult) -> list[str]:
    """Set each node's `provides` to the classes the probe saw it register (packs that imported); return them."""
    lock = versions.load(root, vid)
    changed = []
    for name, n in lock.get("nodes", {}).items():
        p = result["packs"].get(name)
        if p and p["ok"] and sorted(p["classes"]) != n.get("provides"):
            n["provides"] = sorted(p["classes"])
            changed.append(name)
    if changed:
        versions.save(root, vid, lock)
    return changed


def check_interpreter(python: str, what: str = "--probe") -> str:
    """The absolute path of an executable interpreter (symlinks kept: a venv's python is a link to its base)."""
    path = os.path.abspath(os.path.expanduser(python))
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise UsageError(f"{what} {python!r}: no executable interpreter there",
                         hint="give the python of an environment with the version's requirements, "
                              "e.g. <realized>/.venv/bin/python")
    return path


def interpreter_identity(python: str) -> bytes:
    """What makes two probes with `python` comparable: its path, its prefix and when its packages last changed."""
    p = subprocess.run([python, "-c", "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, timeout=60, check=False)
    lines = p.stdout.split("\n")
    if p.returncode != 0 or len(lines) < 2:
        raise ComfyverError(f"--probe {python}: the interpreter does not run ({(p.stderr or '').strip()[-200:]})")
    try:
        mtime = os.stat(lines[1]).st_mtime_ns
    except OSError:
        mtime = 0
    return f"python={python}\nprefix={lines[0]}\npurelib-mtime={mtime}".encode()


def for_sources(lock: Lock, python: str, *, refresh: bool = False) -> ProbeResult:
    """Probe a lock before anything is realized: its core and nodes exported from the caches (git at their
    revs with submodules, registry archives unpacked) and loaded by `python`, an interpreter that has the
    version's requirements. Cached by the lock's inputs and the interpreter."""
    from comfyver.sources import locked as locked_source

    def make() -> ProbeResult:
        with tempfile.TemporaryDirectory(prefix="comfyver-probe-src-") as tmp:
            core = Path(tmp) / "ComfyUI"
            locked_source.place(lock["comfyui"]["locked"], core, f"comfyui ({lock['id']})")
            packs = []
            for name, n in sorted(lock["nodes"].items()):
                loc, dest = n["locked"], Path(tmp) / "nodes" / name
                try:  # never run code the lock did not pin
                    locked_source.place(loc, dest, f"node {name}")
                except locked_source.HashMismatch as exc:
                    if loc["type"] == "git":
                        raise
                    raise ComfyverError(f"node {name}: archive {web.redact(loc['url'])} unpacks to {exc.got}, the lock "
                                        f"says {loc['hash']}", hint="the registry changed a published archive; re-lock") from None
                packs.append(dest)
            return run(core, packs, python)
    return _cached_run(cache_key(lock, interpreter_identity(python)), make, refresh)
