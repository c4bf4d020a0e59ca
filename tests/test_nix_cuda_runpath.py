"""The CUDA RUNPATHs the Nix layer gives, checked with nixpkgs' REAL auto-patchelf.py on the REAL cu13 wheels
the example locks, laid out as Nix lays them out (each wheel its own prefix), then loaded with ctypes.

`python.nix`'s `cudaPlan` (evaluated here by Nix over the example's uv.lock) says, per package, which library
folders auto-patchelf searches and which RUNPATH entries it appends. Without `$ORIGIN`, libcudnn.so.9 cannot
find the sub-libraries it dlopens by name (libcudnn_graph.so.9 ...) once the wheel is its own store path, and
the first cuDNN call aborts (what the first GPU job hit). No GPU is needed to see it: cudnnGetVersion and
loading every shared object run on the CPU.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.nix import harness as h

ROOT = Path(__file__).resolve().parents[1]
AUTO_PATCHELF = ROOT.parent / "shared" / "nix-inputs" / "nixpkgs-scripts" / "setup-hooks" / "auto-patchelf.py"
LIB = ROOT.parent / "shared" / "nix-inputs" / "nixpkgs-lib" / "lib"
WHEELS = ("nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-nvrtc")  # cuDNN and what it needs
SITE = "lib/python3.11/site-packages"


def locked_wheels() -> dict[str, dict]:
    lock = tomllib.loads((ROOT / "versions" / "example" / "uv.lock").read_text())
    out = {}
    for p in lock["package"]:
        if p["name"] in WHEELS:
            [w] = [w for w in p["wheels"] if "x86_64" in w["url"]]
            out[p["name"]] = {"version": p["version"], "file": w["url"].rsplit("/", 1)[1],
                              "sha256": w["hash"].removeprefix("sha256:")}
    return out


def wheel_cache() -> Path:
    d = Path(os.environ.get("COMFYVER_TEST_WHEELS", Path.home() / ".cache" / "comfyver-test-wheels"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fetch(name: str, w: dict) -> Path:
    """The locked wheel (pip download from PyPI, checked against uv.lock's sha256)."""
    path = wheel_cache() / w["file"]
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--dest", str(wheel_cache()), f"{name}=={w['version']}"], check=True)
    h_ = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h_.update(chunk)
    assert h_.hexdigest() == w["sha256"], f"{path}: not the wheel uv.lock pins"
    return path


def plan() -> dict:
    """cudaPlan of nix/python.nix over the example's uv.lock, prefixes standing in for store paths."""
    expr = f"""
    let
      lib = import {LIB};
      python = import {ROOT}/nix/python.nix {{ pkgs = {{ }}; inherit lib; pyproject-nix = null; uv2nix = null;
                                              pyproject-build-systems = null; }};
      graph = python.lockGraph {{ uvLockText = builtins.readFile {ROOT}/versions/example/uv.lock; root = "comfyver-version"; }};
    in python.cudaPlan {{ inherit (graph) names deps; path = n: "@PREFIX@/${{n}}"; sitePackages = "{SITE}"; }}
    """
    return json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout)


def lay_out(base: Path) -> dict[str, Path]:
    """Each wheel unpacked into its own prefix, as uv2nix builds each into its own store path."""
    prefixes = {}
    for name, w in locked_wheels().items():
        prefix = base / name
        with zipfile.ZipFile(fetch(name, w)) as z:
            z.extractall(prefix / SITE)
        prefixes[name] = prefix
    return prefixes


HOST_LIBS = Path("/lib/x86_64-linux-gnu")


def toolchain(base: Path) -> tuple[dict, Path]:
    """What Nix gives auto-patchelf: NIX_BINTOOLS (the loader, glibc's lib folder) and stdenv.cc.cc.lib
    (libstdc++, libgcc_s: python.nix adds it to buildInputs), here from the host's copies."""
    bt, libc, cclib = base / "bintools", base / "glibc", base / "gcc-lib" / "lib"
    (bt / "nix-support").mkdir(parents=True)
    libc.mkdir()
    (libc / "lib").symlink_to(HOST_LIBS)
    (bt / "nix-support" / "dynamic-linker").write_text("/lib64/ld-linux-x86-64.so.2\n")
    (bt / "nix-support" / "orig-libc").write_text(f"{libc}\n")
    cclib.mkdir(parents=True)
    for so in ("libstdc++.so.6", "libgcc_s.so.1"):
        (cclib / so).symlink_to(HOST_LIBS / so)
    return {**os.environ, "NIX_BINTOOLS": str(bt)}, cclib


def patch(base: Path, prefixes: dict[str, Path], the_plan: dict, drop_origin: bool = False) -> None:
    """Run nixpkgs' auto-patchelf.py per package, with the flags autoPatchelfHook passes for our plan."""
    env, cclib = toolchain(base)
    for name, prefix in prefixes.items():
        p = the_plan[name]
        libs = [d for pat in p["searchPaths"] for d in glob.glob(pat.replace("@PREFIX@", str(base)))]
        append = [r for r in p["appendRunpaths"] if not (drop_origin and r == "$ORIGIN")]
        r = subprocess.run([sys.executable, str(AUTO_PATCHELF), "--ignore-missing", *p["ignoreMissing"],
                            "--paths", str(prefix), "--libs", *libs, str(cclib), "--runtime-dependencies",
                            "--append-rpaths", *append, "--extra-args"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"auto-patchelf {name}: {r.stdout[-2000:]}{r.stderr[-2000:]}"


PROBE = r"""
import ctypes, glob, sys
cudnn = ctypes.CDLL(sys.argv[1])
print("cudnn", cudnn.cudnnGetVersion(), flush=True)
for so in sorted(so for prefix in sys.argv[2:] for so in glob.glob(prefix + "/**/*.so*", recursive=True)):
    ctypes.CDLL(so)  # every NEEDED library resolves through its RUNPATH (libcuda: the driver, absent here)
print("loaded all", flush=True)
"""


def probe(base: Path, prefixes: dict[str, Path]) -> subprocess.CompletedProcess:
    [cudnn] = glob.glob(str(prefixes["nvidia-cudnn-cu13"] / SITE / "nvidia" / "*" / "lib" / "libcudnn.so.9"))
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run([sys.executable, "-c", PROBE, cudnn, *map(str, prefixes.values())], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def the_plan():
    return {n: p for n, p in plan().items() if n in WHEELS or n == "torch"}


def test_the_plan_keeps_origin_and_finds_cross_wheel_libraries(the_plan):
    # torch reaches its nvidia-* wheels only through `cuda-toolkit[...]`'s optional dependencies
    assert sum("/nvidia-" in d for d in the_plan["torch"]["searchPaths"]) >= 10
    cudnn = the_plan["nvidia-cudnn-cu13"]
    assert cudnn["appendRunpaths"][0] == "$ORIGIN"
    assert any("/nvidia-cublas/" in d for d in cudnn["searchPaths"])  # libcudnn_ops -> libcublasLt
    # only the driver (and the optional RDMA/MPI/UCX transports of nvidia-* wheels) may be missing
    assert cudnn["ignoreMissing"][:2] == ["libcuda.so.1", "libnvidia-ml.so.1"]
    assert "*" not in cudnn["ignoreMissing"] and "libcudnn_graph.so.9" not in cudnn["ignoreMissing"]
    assert the_plan["torch"]["appendRunpaths"] == ["$ORIGIN", "/run/opengl-driver/lib"]  # no host folder


def test_real_auto_patchelf_on_real_wheels_loads_cudnn(the_plan, tmp_path):
    if not shutil.which("patchelf"):
        pytest.fail("patchelf is missing: .ci/run installs Debian's patchelf")
    base = tmp_path / "store"
    prefixes = lay_out(base)
    patch(base, prefixes, the_plan)
    r = probe(base, prefixes)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-3000:])
    version = int(r.stdout.split("cudnn ", 1)[1].split()[0])
    assert version // 10000 == 9 and "loaded all" in r.stdout


def test_without_origin_the_first_cudnn_call_aborts(the_plan, tmp_path):
    """The defect the plan fixes, reproduced: the same layout patched without `$ORIGIN`."""
    base = tmp_path / "store"
    prefixes = lay_out(base)
    patch(base, prefixes, the_plan, drop_origin=True)
    r = probe(base, prefixes)
    assert r.returncode != 0 and "loaded all" not in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


# ---- cudaPlan only where needed (issue 27) ---------------------------------------------------------------------

def test_the_plan_covers_only_wheels_that_may_link_cuda():
    """torch, the nvidia-* wheels, what depends on them as locked (torchvision) and the undeclared ones
    (torchaudio); no plan for pillow, pyyaml, scipy, av, numpy...: they are built without torch."""
    expr = f"""
    let
      lib = import {LIB};
      python = import {ROOT}/nix/python.nix {{ pkgs = {{ }}; inherit lib; pyproject-nix = null; uv2nix = null;
                                              pyproject-build-systems = null; }};
      graph = python.lockGraph {{ uvLockText = builtins.readFile {ROOT}/versions/example/uv.lock; root = "comfyver-version"; }};
    in builtins.attrNames (python.cudaPlan {{ inherit (graph) names deps pure; path = n: n; sitePackages = "{SITE}"; }})
    """
    got = set(json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout))
    lock = tomllib.loads((ROOT / "versions" / "example" / "uv.lock").read_text())
    nvidia = {p["name"] for p in lock["package"] if p["name"].startswith("nvidia-")}
    assert got == {"torch", "torchvision", "torchaudio"} | nvidia, sorted(got)


def drv_closure(drvs: dict, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo += list(drvs.get(d, {}).get("inputDrvs", {}))
    return seen


def wheel_drvs(drvs: dict) -> dict[str, str]:
    """package name-version -> drv path, for the packages of the env (not their fetched .whl files)."""
    return {d["env"]["name"]: p for p, d in drvs.items()
            if "pname" in d["env"] and not d["env"]["name"].endswith((".whl", ".tar.gz", ".zip"))}


@pytest.fixture(scope="module")
def bumped(tmp_path_factory):
    """The example env, and the same env whose torch wheel is another file (its hash changed in uv.lock): the
    derivations of both (`nix show-derivation -r`; nothing is built)."""
    base = tmp_path_factory.mktemp("bump")
    core = h.git_input(h.git_repo(base / "src" / "comfyui", {"main.py": "print('core')\n"}), "comfyui")
    versions = {vid: h.version_lock(vid, core, torch="pypi") for vid in ("gpu", "bumped")}
    flake = h.make_flake(base / "flake", versions)
    uv_lock = flake / "versions" / "bumped" / "uv.lock"
    text = uv_lock.read_text()
    lock = tomllib.loads(text)
    [torch] = [p for p in lock["package"] if p["name"] == "torch"]
    old = next(w["hash"] for w in torch["wheels"] if "x86_64" in w["url"])
    assert text.count(old) == 1
    uv_lock.write_text(text.replace(old, "sha256:" + hashlib.sha256(b"another torch").hexdigest()))
    h.git("commit", "-q", "-am", "torch bumped", cwd=flake)
    ov = h.stand_ins(base / "stand-in")
    return {vid: h.show_derivation(flake, f"packages.{h.SYSTEM}.version-{vid}.venv", ov) for vid in versions}


def test_a_torch_bump_leaves_pure_c_wheels_as_they_are(bumped):
    before, after = (wheel_drvs(bumped[v]) for v in ("gpu", "bumped"))
    v = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "versions" / "example" / "uv.lock").read_text())["package"]}
    torch = f"torch-{v['torch']}"
    assert before[torch] != after[torch]  # the bump is real
    for name in ("pillow", "pyyaml", "scipy", "av", "numpy", "safetensors", "sentencepiece", "triton"):
        key = f"{name}-{v[name]}"
        assert before[key] == after[key], f"{name}'s derivation changed with torch's"
        inputs = {bumped["gpu"][d]["env"].get("name", "") for d in drv_closure(bumped["gpu"], before[key])}
        assert not any(n.startswith(("torch-", "nvidia-")) for n in inputs), (name, sorted(inputs))
    for name in ("torchvision", "torchaudio"):  # they link libtorch / libcudart: torch's path is in their build
        key = f"{name}-{v[name]}"
        assert before[key] != after[key], name
        assert bumped["gpu"][before[torch]]["outputs"]["out"]["path"] in bumped["gpu"][before[key]]["env"]["preFixup"]
    changed = {k for k in before if before[k] != after.get(k)}
    assert all(k.startswith(("torch", "nvidia-", "comfyui-env", "comfyver-version-")) for k in changed), sorted(changed)


def needed_check(name: str) -> str:
    expr = f"""(import {ROOT}/nix/python.nix {{ pkgs = {{ }}; lib = import {LIB};
                pyproject-nix = null; uv2nix = null; pyproject-build-systems = null; }}).cudaNeededCheck "{name}" """
    return json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout)


def test_a_wheel_built_without_cuda_that_needs_it_fails_naming_the_library(tmp_path):
    """The build step that checks the lock-time decision: ELF NEEDED entries read with patchelf."""
    out = tmp_path / "out"
    lib = out / "lib" / "python3.11" / "site-packages" / "demo"
    lib.mkdir(parents=True)
    shutil.copy2(HOST_LIBS / "libz.so.1", lib / "_plain.so")  # needs libc only: passes
    script = needed_check("demo")
    ok = subprocess.run(["bash", "-ec", script], env={**os.environ, "out": str(out)}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    shutil.copy2(HOST_LIBS / "libz.so.1", lib / "_ext.so")
    subprocess.run(["patchelf", "--add-needed", "libtorch_cuda.so", "--add-needed", "libcuda.so.1", str(lib / "_ext.so")],
                   check=True)
    bad = subprocess.run(["bash", "-ec", script], env={**os.environ, "out": str(out)}, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "comfyver: demo:" in bad.stderr and "_ext.so needs libtorch_cuda.so" in bad.stderr
    assert "linksCudaUndeclared in nix/python.nix" in bad.stderr and "libcuda.so.1" not in bad.stderr  # the driver's
    # a library the wheel ships itself is found there (triton bundles its own)
    shutil.copy2(HOST_LIBS / "libz.so.1", lib / "libtorch_cuda.so")
    shipped = subprocess.run(["bash", "-ec", script], env={**os.environ, "out": str(out)}, capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
