"""The files of a locked input, and their scans: the locked core and node packs read from the git cache or the
registry archive (hash verified), scanned with nodescan and cached per commit or archive hash.

One job: source in, `nodescan.Scan` out. Which pack provides a class is decided above (nodemap); the
Python requirements read from the same files are pylock's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from comfyver.base import project, web
from comfyver.base.errors import ComfyverError
from comfyver.base.fsutil import atomic_write_json
from comfyver.base.lockfile import Node, NodeLocked, ZipLocked
from comfyver.lock import nodescan

CORE_SCAN_PREFIXES = ("nodes.py", "comfy_extras/", "comfy_api_nodes/")
SCAN_VERSION = 8


def scan_python(text: str) -> dict[str, list[tuple[str, str]]]:
    """Node classes one Python file registers -> their model inputs [(input, folder)]."""
    return nodescan.scan({"file.py": text}).classes


def scan_files(files: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    return nodescan.scan(files).classes


def scan_tree(path: str | os.PathLike[str], core: bool = False) -> dict[str, list[tuple[str, str]]]:
    return scan_tree_full(path, core).classes


def scan_tree_full(path: str | os.PathLike[str], core: bool = False) -> nodescan.Scan:
    root = Path(path)
    files = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root).as_posix()
        if core and not rel.startswith(CORE_SCAN_PREFIXES):
            continue
        if any(part in ("tests", "test", "__pycache__", ".git") for part in rel.split("/")[:-1]):
            continue
        files[rel] = f.read_text(encoding="utf-8", errors="replace")
    return nodescan.scan(files)


def _git_blobs(repo: Path, rev: str, keep: Callable[[str], bool]) -> dict[str, str]:
    """Text of the files at `rev` whose path `keep(path)` accepts, read in one `git cat-file --batch`."""
    ls = subprocess.run(["git", "ls-tree", "-r", "-z", "--full-tree", rev], cwd=repo, capture_output=True, check=True).stdout
    wanted = []
    for rec in ls.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        p = path.decode(errors="replace")
        if meta.split()[1] == b"blob" and keep(p):
            wanted.append((p, meta.split()[2].decode()))
    if not wanted:
        return {}
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, capture_output=True, check=True,
                           input="".join(oid + "\n" for _, oid in wanted).encode()).stdout
    files, pos = {}, 0
    for p, _ in wanted:
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        files[p] = batch[header_end + 1: header_end + 1 + size].decode("utf-8", errors="replace")
        pos = header_end + 1 + size + 1
    return files


def _git_files(repo: Path, rev: str, core: bool) -> dict[str, str]:
    """The Python files a scan reads (core: only its node folders; never tests)."""
    return _git_blobs(repo, rev, lambda p: p.endswith(".py") and (not core or p.startswith(CORE_SCAN_PREFIXES))
                      and not any(part in ("tests", "test") for part in p.split("/")[:-1]))


def scan_locked(url: str, rev: str, what: str, core: bool = False) -> dict[str, list[tuple[str, str]]]:
    return scan_locked_full(url, rev, what, core).classes


def _cached_scan(cache: Path, make: Callable[[], nodescan.Scan]) -> nodescan.Scan:
    try:
        return nodescan.Scan.from_json(json.loads(cache.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = make()
    atomic_write_json(cache, result.to_json())
    return result


def scan_locked_full(url: str, rev: str, what: str, core: bool = False) -> nodescan.Scan:
    """Scan a locked git input (core or node pack) at `rev`; cached per rev."""
    from comfyver.sources import gitsource

    cache = project.cache_dir() / "nodescan" / f"{'core' if core else 'pack'}-{rev}-v{SCAN_VERSION}.json"
    return _cached_scan(cache, lambda: nodescan.scan(_git_files(gitsource.fetch(url, rev, what), rev, core)))


def frontend_mentions(loc: NodeLocked, names: set[str], what: str) -> set[str]:
    """Which of `names` a locked git pack's JavaScript files name as a string literal (its frontend-only nodes)."""
    if loc["type"] != "git" or not names:
        return set()
    from comfyver.sources import locked as locked_source

    repo = locked_source.fetch(loc, f"node {what}")
    text = "\n".join(_git_blobs(repo, loc["rev"], lambda p: p.endswith((".js", ".mjs"))).values())
    return {n for n in names if any(q + n + q in text for q in ('"', "'", "`"))}


def frontend_only(nodes: Mapping[str, Node], names: set[str]) -> dict[str, str]:
    """class -> node, for each of `names` that a locked node's web files name (see frontend_mentions)."""
    found: dict[str, str] = {}
    for name, n in nodes.items():
        for c in frontend_mentions(n["locked"], set(names) - set(found), name):
            found[c] = name
    return found


def newest_cached_core() -> tuple[str | None, dict[str, list[tuple[str, str]]] | None]:
    """(rev, classes) of the most recently written core scan in the cache, or (None, None)."""
    scans = sorted((project.cache_dir() / "nodescan").glob(f"core-*-v{SCAN_VERSION}.json"),
                   key=lambda f: f.stat().st_mtime, reverse=True)
    for f in scans:
        try:
            return f.name.split("-")[1], nodescan.Scan.from_json(json.loads(f.read_text())).classes
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None, None


def read_locked_zip(loc: ZipLocked, what: str) -> dict[str, str]:
    """Text of the .py files and requirement files of a locked registry archive, its hash verified."""
    import tempfile

    from comfyver.sources import locked as locked_source

    with tempfile.TemporaryDirectory(prefix="comfyver-zipread-") as tmp:
        tree = Path(tmp) / "node"
        try:
            locked_source.place(loc, tree, what)
        except locked_source.HashMismatch as exc:
            raise ComfyverError(f"{what}: archive at {web.redact(loc['url'])} has hash {exc.got}, the lock says "
                                f"{loc['hash']}", hint="the registry changed a published archive; re-lock the node") from None
        return {f.relative_to(tree).as_posix(): f.read_bytes().decode("utf-8", errors="replace")
                for f in sorted(tree.rglob("*"))
                if f.name.endswith((".py", "requirements.txt", "pyproject.toml")) and f.is_file() and not f.is_symlink()}


def scan_locked_node(name: str, loc: NodeLocked) -> dict[str, list[tuple[str, str]]]:
    return scan_locked_node_full(name, loc).classes


def scan_locked_node_full(name: str, loc: NodeLocked) -> nodescan.Scan:
    """Scan a locked node of either kind (git commit or registry archive); cached."""
    if loc["type"] == "git":
        return scan_locked_full(loc["url"], loc["rev"], f"node {name}")
    zloc: ZipLocked = loc  # narrowed: the closure below cannot see that
    key = hashlib.sha256(zloc["hash"].encode()).hexdigest()[:32]

    def make() -> nodescan.Scan:
        files = {p: t for p, t in read_locked_zip(zloc, f"node {name}").items()
                 if p.endswith(".py") and not any(part in ("tests", "test") for part in p.split("/")[:-1])}
        return nodescan.scan(files)
    return _cached_scan(project.cache_dir() / "nodescan" / f"zip-{key}-v{SCAN_VERSION}.json", make)
