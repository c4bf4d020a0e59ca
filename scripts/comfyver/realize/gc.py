"""`comfyver gc`: what interrupted runs left behind (temp trees, `.part` downloads, scratch folders), and
with `blobs=True` the model-store blobs no version of the project uses. A plan first; deleting is a
second, explicit step. Entries younger than `min_age` seconds are left alone (a run may still own them), blobs
included. Nothing in the store is followed through a link: a link named like a blob is removed as a link."""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from comfyver.base import lockfile, project
from comfyver.lock import proofenv
from comfyver.sources import modelstore


@dataclass
class Leftover:
    path: Path
    kind: str  # realize-temp | realize-old | partial-download | scratch | proof-env-temp | proof-env | unused-blob
    bytes: int

    def as_json(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "bytes": self.bytes}


def _size(p: Path) -> int:
    if p.is_symlink() or p.is_file():
        return p.lstat().st_size
    return sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def _old(p: Path, min_age: float, now: float) -> bool:
    try:
        return now - p.lstat().st_mtime >= min_age
    except FileNotFoundError:
        return False


def used_blobs(root: Path) -> set[str]:
    """sha256 of every model any version of the project locks."""
    used = set()
    for vid in project.version_ids(root):
        lock = lockfile.read(project.lock_path(root, vid))
        used |= {m["locked"]["sha256"] for m in lock["models"].values()}
    return used


def plan(root: Path | None, store: Path | None = None, *, blobs: bool = False, proof_envs: bool = False,
         min_age: float = 3600) -> list[Leftover]:
    """With `proof_envs`, also the environments `lock` made to prove drafts (<cache>/proof-envs: a lock makes
    one again, from uv's cache, when it needs it)."""
    now = time.time()
    store = Path(store or modelstore.default_store())
    realized = project.cache_dir() / "realized"
    candidates: list[tuple[Path, str]] = []
    if realized.is_dir():
        candidates += [(p, "realize-temp") for p in realized.glob(".*.tmp-*")]
        candidates += [(p, "realize-old") for p in realized.glob(".*.old-*")]
    envs = proofenv.root()
    if envs.is_dir():
        candidates += [(p, "proof-env-temp") for p in envs.glob(".*.tmp-*")]
        if proof_envs:
            candidates += [(p, "proof-env") for p in envs.iterdir() if not p.name.startswith(".") and p.is_dir()]
    candidates += [(p, "partial-download") for p in store.glob("sha256/*.part")]
    candidates += [(p, "partial-download") for p in store.glob(".resolve-*")]
    if root is not None and (root / "versions").is_dir():
        candidates += [(p, "scratch") for p in (root / "versions").glob(".*.pylock-*")]
        candidates += [(p, "scratch") for p in (root / "versions").glob(".*.deleting")]
    out = [Leftover(p, kind, _size(p)) for p, kind in sorted(candidates) if _old(p, min_age, now)]
    if blobs and root is not None:
        used = used_blobs(root)
        for blob in sorted(store.glob("sha256/*")):
            if (len(blob.name) == 64 and blob.name not in used and _file_or_link(blob)
                    and _old(blob, min_age, now)):
                out.append(Leftover(blob, "unused-blob", _size(blob)))
    return out


def _file_or_link(p: Path) -> bool:
    """A plain file or a link (never followed), by lstat."""
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def remove(items: list[Leftover]) -> int:
    """Delete the planned entries; return the bytes freed."""
    freed = 0
    for item in items:
        p = item.path
        if p.is_dir() and not p.is_symlink():
            for d in [p, *p.rglob("*")]:  # read-only trees (realized .venvs, blobs) can still go
                if d.is_dir() and not d.is_symlink():
                    os.chmod(d, 0o755)
            shutil.rmtree(p, ignore_errors=True)
        else:
            if item.kind == "unused-blob":  # a read-only blob needs no chmod to go (nor may one follow a link)
                (p.parent / f"{p.name}.lock").unlink(missing_ok=True)
            p.unlink(missing_ok=True)
        freed += item.bytes
    return freed
