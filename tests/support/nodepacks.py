"""The real custom-node corpus in ../shared/data/node-packs-v2 (real repositories with their history, MANIFEST.md).

- `packs()`: the manifest's node packs (not the submodule dependency).
- `checkout(pack)`: a read-only-by-convention working tree at the pinned commit, its bundled submodules
  filled in, cached under ~/.cache/comfyver-test-nodepacks/ (callers copy it before running anything in it).
- `serve(git_server)`: every pack (and the real ComfyUI history, ../shared/data/comfyui-core) as a bare repository
  behind the test git server, and the git config (`url.<server>/.insteadOf https://github.com/`, as environment
  variables) that makes `https://github.com/o/r` reach it, so locks record real GitHub URLs with the real revs and
  hashes. Packs come in two formats (MANIFEST.md): a full-history bundle, or a bare repository with holes (some
  old commits, and for 7 packs the default branch head, cannot be checked out: their blobs are absent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CORPUS = SHARED / "node-packs-v2"
CORE = SHARED / "comfyui-core" / "ComfyUI.git"  # the real ComfyUI history (MANIFEST.md there)


def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())


def packs() -> list[dict]:
    return [p for p in manifest()["packs"] if p["role"] == "node-pack"]


def by_repo() -> dict[str, dict]:
    return {p["repo"]: p for p in manifest()["packs"]}


def _git(*args, cwd=None) -> str:
    return subprocess.run(["git", "-c", "advice.detachedHead=false", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def cache_dir() -> Path:
    return Path(os.environ.get("COMFYVER_TEST_NODEPACKS_CACHE", Path.home() / ".cache" / "comfyver-test-nodepacks"))


def bare(pack: dict, dest: Path) -> Path:
    """The pack as a servable bare repository at `dest`, as the corpus' tools/unpack.sh makes it: a bundle
    unbundled (HEAD its default branch), a bare-format pack copied."""
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if pack["format"] == "bare":
            shutil.copytree(CORPUS / pack["path"], tmp, symlinks=True)
            for f in tmp.rglob("*"):
                f.chmod(f.stat().st_mode | 0o200)
        else:
            _git("init", "-q", "--bare", "-b", pack["default_branch"], str(tmp))
            _git("-C", str(tmp), "fetch", "-q", str(CORPUS / pack["bundle"]), "refs/*:refs/*")
        _servable(tmp)
        tmp.rename(dest)
    return dest


def _servable(repo: Path) -> None:
    _git("-C", str(repo), "config", "uploadpack.allowAnySHA1InWant", "true")
    if not (repo / "shallow").exists():  # git 2.39 clients loop on lazy fetches from a shallow repository
        _git("-C", str(repo), "config", "uploadpack.allowFilter", "true")
    _git("-C", str(repo), "config", "http.receivepack", "false")


def _extract(pack: dict, target: Path) -> None:
    repo = bare(pack, cache_dir() / "bare-v2" / pack["owner"] / pack["name"])
    target.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "-C", str(repo), "archive", pack["commit"]], check=True, capture_output=True,
                         env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=tar, check=True)


def checkout(pack: dict) -> Path:
    """The pack's tree at its commit (no .git), with bundled submodules filled in."""
    dest = cache_dir() / f"{pack['name']}-{pack['commit'][:12]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.is_dir():
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _extract(pack, tmp)
        known = by_repo()
        for sub in pack.get("submodules") or []:
            dep = known.get(_repo_of(sub.get("url", "")))
            if dep is not None:
                shutil.rmtree(tmp / sub["path"], ignore_errors=True)
                _extract(dep, tmp / sub["path"])
        tmp.rename(dest)
    return dest


def _repo_of(url: str) -> str:
    u = url.rstrip("/").removesuffix(".git")
    return "/".join(u.split("/")[-2:])


def serve(git_server) -> dict[str, str]:
    """Bare copies of every pack and of ComfyUI under the git server; returns the environment for git's insteadOf.

    Where the snapshot's default branch head cannot be checked out (its blobs are absent: 7 packs, MANIFEST.md), the
    served default branch points at the pinned commit instead: the repository as GitHub served it when that commit
    was the head (the example workflows are the pinned commit's), so a lock that takes the newest commit gets one the
    corpus can send; GitHub itself would send the real head."""
    for p in manifest()["packs"]:
        repo = bare(p, git_server.root / p["owner"] / p["name"])
        if not p["head_checkoutable"]:
            _git("-C", str(repo), "update-ref", f"refs/heads/{p['default_branch']}", p["commit"])
        alias = repo.with_name(p["name"] + ".git")
        if not alias.exists():
            alias.symlink_to(repo.name)
    core = git_server.root / "comfyanonymous" / "ComfyUI.git"
    if not core.exists():
        shutil.copytree(CORE, core, symlinks=True)
        _servable(core)
        (core.parent / "ComfyUI").symlink_to("ComfyUI.git")
    base = f"http://127.0.0.1:{git_server.port}/"
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{base}.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/"}
