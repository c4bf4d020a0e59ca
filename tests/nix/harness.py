"""Build a throw-away copy of the flake with fixture versions and the stand-ins.

Fixture inputs are real: git repositories and files on disk reached through
file:// URLs, locked with comfyver's own code (gitsource.lock, nar, archive),
so every hash in a fixture lock is one Nix will check.
"""

from __future__ import annotations

import json
import os
import re
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
    p = subprocess.run(["nix", *args], cwd=cwd, env=nix_env(env), capture_output=True, encoding="utf-8",
                       errors="replace", timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"nix {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-6000:]}")
    return p


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


def workdir(prefix: str = "comfyver-nix-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# outputs the Nix test modules built; test_nix_flake, the last module that builds, frees them all at its end
# (test_nix_env's venv among them: as long as it is on disk, it holds the env's packages there)
built_outputs: list[str] = []


def invalid_store_paths(*paths: str | Path) -> set[str]:
    """Those of `paths` that are not (or no longer) valid in the store."""
    if not paths:
        return set()
    return set(subprocess.run(["nix-store", "--check-validity", "--print-invalid", *map(str, paths)], env=nix_env(),
                              capture_output=True, text=True).stdout.split())


def delete_if_dead(*paths: str | Path, closure: bool = True) -> None:
    """Delete these store paths, their closures and the paths that refer to them, where no root holds them: the
    wheels once their packages are built, an image archive once read, a module's builds once its tests are done. The whole
    run needs tens of GB and CI machines can be short of disk; `nix-store --delete` refuses a live path, so this
    never removes what a root or another path still uses (a path it refuses is left, with what it needs)."""
    def store(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nix-store", *args], env=nix_env(), capture_output=True, text=True)

    given = [str(p) for p in paths]
    invalid = invalid_store_paths(*given)
    valid = [p for p in given if p not in invalid]  # one already gone would fail the whole query
    if not closure:  # these paths only (an image archive: its compressed bytes may name store paths by chance)
        for path in valid:
            store("--delete", path)
        return
    requisites = store("-qR", *valid).stdout.split() if valid else []
    # and every path that refers to one of them (a build's intermediate results: an image's layers.json holds the
    # env's packages): Nix refuses a path while any valid path refers to it, dead or not
    todo = store("-q", "--referrers-closure", *requisites).stdout.split() if requisites else []
    while todo:
        p = store("--delete", *todo)
        if p.returncode == 0:
            return
        alive = re.findall(r"Cannot delete path '([^']+)' since it is still alive", p.stderr)
        if not alive:
            return  # not a refusal this can work around: leave the rest
        keep = set(store("-qR", alive[0]).stdout.split()) | {alive[0]}  # it and what it needs stay
        gone = invalid_store_paths(*todo)  # deleted before the refusal
        todo = [t for t in todo if t not in keep and t not in gone]


def fetched_wheels(uv_lock: Path) -> list[Path]:
    """The store paths of the wheels Nix fetched for `uv_lock` (each named after its file)."""
    import tomllib
    import urllib.parse
    names = {urllib.parse.unquote(w["url"].rsplit("/", 1)[-1])
             for pkg in tomllib.loads(uv_lock.read_text())["package"] for w in pkg.get("wheels", []) if "url" in w}
    return [p for p in Path("/nix/store").glob("*.whl") if p.name.split("-", 1)[1] in names]


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
            "python": {"requires": "==3.11.*", "torch": torch}, "workflows": []}


# ---- the flake copy ---------------------------------------------------------

EXAMPLE_PYTHON = ROOT / "versions" / "example"  # the bundled example's pyproject.toml + uv.lock (real CUDA torch)


def make_flake(dest: Path, versions: dict[str, dict], python_project: Path = EXAMPLE_PYTHON) -> Path:
    """The repository's flake, nix/, and what its worker is built from (pyproject.toml, uv.lock, handler/,
    scripts/comfyver), with `versions` as versions/ (each with `python_project`'s pyproject.toml + uv.lock),
    committed in a fresh git repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("flake.nix", "flake.lock", "pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "nix", dest / "nix")
    shutil.copytree(ROOT / "handler", dest / "handler", ignore=skip)
    shutil.copytree(ROOT / "scripts" / "comfyver", dest / "scripts" / "comfyver", ignore=skip)
    for vid, lock in versions.items():
        vdir = dest / "versions" / vid
        vdir.mkdir(parents=True)
        (vdir / "version.json").write_text(lock if isinstance(lock, str) else json.dumps(lock, indent=2))
        for name in ("pyproject.toml", "uv.lock"):
            shutil.copy2(python_project / name, vdir / name)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "fixture flake", cwd=dest)
    return dest


SHARED_INPUTS = ROOT.parent / "shared" / "nix-inputs"
# flake.lock's inputs whose real trees ../shared/nix-inputs holds byte-exact (folder name there)
REAL_INPUTS = {"uv2nix": "uv2nix", "pyproject-nix": "pyproject-nix", "pyproject-build-systems": "build-system-pkgs"}
NIXPKGS_SCRIPTS = {"auto-patchelf.py": "setup-hooks/auto-patchelf.py", "auto-patchelf.sh": "setup-hooks/auto-patchelf.sh",
                   "stream_layered_image.py": "docker/stream_layered_image.py",
                   "closure-graph.py": "references-by-popularity/closure-graph.py"}
# Files the shared copy holds as regular files whose text is the target of the symlink upstream has
# there (its copy flattened symlinks); put back as symlinks before seeding, which the narHash check proves.
FLATTENED_SYMLINKS = {"pyproject-nix": ["doc/src/reference-std.md"]}
_seeded: dict[str, Path] = {}  # input -> its store path (seeded again if a test deleted it)


def restore_symlinks(tree: Path, rels: list[str]) -> None:
    """Put back, as symlinks, the files a copy flattened (a regular file whose text is the link's target);
    a copy that kept the real symlink is left as it is."""
    for rel in rels:
        f = tree / rel
        if f.is_symlink():
            continue
        target = f.read_text()
        f.unlink()
        f.symlink_to(target)


def seed_real_inputs() -> None:
    """Add the real uv2nix, pyproject.nix and build-system-pkgs trees to the store under the name a github
    input gets ("source"): Nix then resolves flake.lock's entries for them (same narHash) offline."""
    lock = json.loads((ROOT / "flake.lock").read_text())["nodes"]
    for inp, folder in REAL_INPUTS.items():
        if inp in _seeded and not invalid_store_paths(_seeded[inp]):
            continue
        tmp = workdir("comfyver-seed-")
        try:
            shutil.copytree(SHARED_INPUTS / folder, tmp / "source", symlinks=True)
            restore_symlinks(tmp / "source", FLATTENED_SYMLINKS.get(folder, []))
            path = subprocess.run(["nix-store", "--add-fixed", "--recursive", "sha256", str(tmp / "source")],
                                  env=nix_env(), check=True, capture_output=True, text=True).stdout.strip()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        got = nix("hash", "path", path).stdout.strip()
        want = lock[inp]["locked"]["narHash"]
        if got != want:
            raise AssertionError(f"{SHARED_INPUTS / folder} hashes to {got}, flake.lock has {want} for {inp}")
        _seeded[inp] = Path(path)


def host_json(python: str = sys.executable) -> dict:
    """The host's interpreters and tools the stand-in nixpkgs builds with."""
    import platform
    base = Path(sys.base_prefix) / "bin"
    pythons = {}
    for minor in ("11", "12", "13"):
        cands = [base / f"python3.{minor}", *(Path(p) / f"python3.{minor}" for p in os.environ.get("PATH", "").split(":")),
                 *sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python3.{minor}"))]
        for c in cands:
            if c.is_file() and os.access(c, os.X_OK) and ".pyenv/shims" not in str(c) and sys.prefix not in str(c):
                pythons[f"3.{minor}"] = str(c.resolve())
                break
    versions = {v: subprocess.run([p, "-c", "import platform; print(platform.python_version())"], check=True,
                                  capture_output=True, text=True).stdout.strip() for v, p in pythons.items()}
    uv = shutil.which("uv") or str(Path(sys.prefix) / "bin" / "uv")
    return {"pythons": pythons, "pythonVersions": versions, "uv": str(Path(uv).resolve()), "pelfPython": python,
            "glibcVersion": platform.libc_ver()[1]}


def stand_ins(dest: Path, python: str = sys.executable) -> list[str]:
    """The stand-in nixpkgs (nixpkgs' real lib, nixpkgs' real scripts) next to the flake, and the real
    uv2nix/pyproject.nix/build-system-pkgs in the store; returns the one --override-input (nixpkgs)."""
    seed_real_inputs()
    pkgs = dest / "nixpkgs"
    shutil.copytree(STAND_IN / "nixpkgs", pkgs)
    shutil.copytree(SHARED_INPUTS / "nixpkgs-lib" / "lib", pkgs / "lib")
    (pkgs / "scripts").mkdir()
    for name, rel in NIXPKGS_SCRIPTS.items():
        shutil.copy2(SHARED_INPUTS / "nixpkgs-scripts" / rel, pkgs / "scripts" / name)
    (pkgs / "host.json").write_text(json.dumps(host_json(python), indent=1))
    return ["--override-input", "nixpkgs", f"path:{pkgs}"]


def show_derivation(flake: Path, attr: str, overrides: list[str]) -> dict:
    """`nix show-derivation -r` of a flake attribute: drv path -> derivation."""
    out = nix("show-derivation", "-r", f"{flake}#{attr}", *overrides).stdout
    return json.loads(out)
