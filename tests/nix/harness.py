"""Build a throw-away copy of the flake with fixture versions and the stand-ins.

Fixture inputs are real: git repositories and files on disk reached through
file:// URLs, locked with comfyver's own code (gitsource.lock, nar, archive),
so every hash in a fixture lock is one Nix will check.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from comfyver.base import nar
from comfyver.sources import archive, gitsource

ROOT = Path(__file__).resolve().parents[2]
NIX_DIR = Path(__file__).resolve().parent
FIXTURES = NIX_DIR / "fixtures"
STAND_IN = NIX_DIR / "stand-in"
SYSTEM = "x86_64-linux"

# No binary cache (no internet) and builds as the calling user (no nixbld
# users reading test folders). The sandbox is off on this Nix.
NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nbuild-users-group =\nwarn-dirty = false\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}


def nix_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "NIX_CONFIG": NIX_CONFIG, **(extra or {})}
    for var in ("HF_TOKEN", "CIVITAI_TOKEN"):
        if not extra or var not in extra:
            env.pop(var, None)
    return env


def nix(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(["nix", *args], cwd=cwd, env=nix_env(env), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"nix {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-6000:]}")
    return p


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


def workdir(prefix: str = "comfyver-nix-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# ---- fixture inputs --------------------------------------------------------

def write_tree(dest: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        if rel.endswith(".sh"):
            p.chmod(0o755)


def git_repo(path: Path, files: dict[str, str | bytes] | None = None, source: Path | None = None) -> str:
    """A git repository with one commit on `main`; returns its file:// URL."""
    path.mkdir(parents=True)
    if source is not None:
        shutil.copytree(source, path, dirs_exist_ok=True)
    write_tree(path, files or {})
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "fixture", cwd=path)
    return path.as_uri()


def git_input(url: str, what: str) -> dict:
    """{original, locked} as `comfyver lock` writes them."""
    original = {"type": "git", "url": url, "ref": "main"}
    return {"original": original, "locked": gitsource.lock(original, what)}


def zip_input(path: Path, files: dict[str, str | bytes], root: str = "pack-1.0", node_id: str = "pack") -> dict:
    """A registry-style node zip (one root folder) and its lock entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for rel, content in files.items():
            info = zipfile.ZipInfo(f"{root}/{rel}")
            info.external_attr = (0o755 if rel.endswith(".sh") else 0o644) << 16
            z.writestr(info, content)
    unpacked = path.parent / (path.name + ".unpacked")
    archive.extract_zip(path, unpacked, strip_root=True, what=node_id)
    sri = nar.to_sri(nar.nar_hash(unpacked))
    shutil.rmtree(unpacked)
    return {"original": {"type": "registry", "id": node_id, "version": "1.0"},
            "locked": {"type": "zip", "url": path.as_uri(), "hash": sri, "stripRoot": True, "version": "1.0"}}


def model_input(path: Path, data: bytes, auth: str | None = None) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    locked = {"url": path.as_uri(), "sha256": nar.flat_hash(path).hex(), "size": len(data)}
    if auth:
        locked["auth"] = auth
    return {"original": {"url": path.as_uri()}, "locked": locked}


def version_lock(vid: str, comfyui: dict, nodes: dict | None = None, models: dict | None = None,
                 torch: str = "cpu") -> dict:
    return {"schema": 1, "id": vid, "comfyui": comfyui, "nodes": nodes or {}, "models": models or {},
            "python": {"requires": "==3.12.*", "torch": torch}, "workflows": []}


# ---- the flake copy ---------------------------------------------------------

def make_flake(dest: Path, versions: dict[str, dict], python_fixture: str = "python-cuda") -> Path:
    """The repository's flake + nix/ + handler/ with `versions` as versions/, committed in a fresh git repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("flake.nix", "flake.lock"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "nix", dest / "nix")
    shutil.copytree(ROOT / "handler", dest / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "uv.lock"):  # a small real uv project standing for the repository's
        shutil.copy2(FIXTURES / "root-project" / name, dest / name)
    for vid, lock in versions.items():
        vdir = dest / "versions" / vid
        vdir.mkdir(parents=True)
        (vdir / "version.json").write_text(lock if isinstance(lock, str) else json.dumps(lock, indent=2))
        for name in ("pyproject.toml", "uv.lock"):
            shutil.copy2(FIXTURES / python_fixture / name, vdir / name)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "fixture flake", cwd=dest)
    return dest


def stand_ins(dest: Path, python: str = sys.executable) -> list[str]:
    """Copy the stand-ins next to the flake; returns the --override-input arguments."""
    shutil.copytree(STAND_IN, dest, ignore=shutil.ignore_patterns("README.md"))
    if python == sys.executable and sys.prefix != sys.base_prefix:
        # a venv's python found through a link elsewhere is the bare base interpreter: exec it by its path
        wrapper = dest / "host-python"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        wrapper.chmod(0o755)
        python = str(wrapper)
    (dest / "nixpkgs" / "host.json").write_text(json.dumps({"python": python}))
    args: list[str] = []
    for inp, folder in (("nixpkgs", "nixpkgs"), ("pyproject-nix", "pyproject-nix"), ("uv2nix", "uv2nix"),
                        ("pyproject-build-systems", "build-system-pkgs")):
        args += ["--override-input", inp, f"path:{dest / folder}"]
    return args


def show_derivation(flake: Path, attr: str, overrides: list[str]) -> dict:
    """`nix show-derivation -r` of a flake attribute: drv path -> derivation."""
    out = nix("show-derivation", "-r", f"{flake}#{attr}", *overrides).stdout
    return json.loads(out)
