"""The real custom-node corpus in ../shared/data/node-packs (git bundles of real repositories, MANIFEST.md).

- `packs()`: the manifest's node packs (not the submodule dependency).
- `checkout(pack)`: a read-only-by-convention working tree at the pinned commit, its bundled submodules
  filled in, cached under ~/.cache/comfyver-test-nodepacks/ (callers copy it before running anything in it).
- `serve(git_server)`: every bundle as a bare repository behind the test git server, and the git config
  (`url.<server>/.insteadOf https://github.com/`, as environment variables) that makes `https://github.com/o/r`
  reach it, so locks record real GitHub URLs with the real revs and hashes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "node-packs"


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
    """The (shallow) bundle unbundled into a bare repository at `dest`, as the corpus' MANIFEST.md shows."""
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _git("init", "-q", "--bare", "-b", "main", str(tmp))
        (tmp / "shallow").write_text(pack["commit"] + "\n")
        _git("-C", str(tmp), "fetch", "-q", str(CORPUS / pack["bundle"]), "refs/*:refs/*")
        _git("-C", str(tmp), "config", "uploadpack.allowAnySHA1InWant", "true")
        _git("-C", str(tmp), "config", "http.receivepack", "false")
        tmp.rename(dest)
    return dest


def _extract(pack: dict, target: Path) -> None:
    repo = bare(pack, cache_dir() / "bare" / pack["owner"] / pack["name"])
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
    """Bare copies of every bundle under the git server; returns the environment for git's insteadOf."""
    for p in manifest()["packs"]:
        repo = bare(p, git_server.root / p["owner"] / p["name"])
        alias = repo.with_name(p["name"] + ".git")
        if not alias.exists():
            alias.symlink_to(repo.name)
    base = f"http://127.0.0.1:{git_server.port}/"
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{base}.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/"}
