"""The bundled example's Python env, built by the flake with the REAL uv2nix, pyproject.nix and build-system-pkgs
(seeded from ../shared/nix-inputs: flake.lock resolves them, no --override-input), its wheels downloaded from
PyPI by Nix's builtin fetcher with uv.lock's hashes and patched by nixpkgs' real auto-patchelf.py.

Its interpreter runs with an empty environment and no host site-packages: torch imports, cuDNN gives its
version, and every shared object of every nvidia-* wheel loads through its RUNPATH (CPU only: loading and
cudnnGetVersion need no GPU). What only the optional RDMA/MPI/UCX transports of cuFile and NVSHMEM link may be
missing (as on a GPU host); nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.nix import harness as h

PROBE = r"""
import ctypes, glob, json, os, site, sys
out = {"prefix": sys.prefix, "base": sys.base_prefix, "path": sys.path}
import torch
out.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
sp = site.getsitepackages()[0]
libs = sorted({os.path.realpath(p) for p in glob.glob(sp + "/nvidia/*/lib/*.so*")})
failed = {}
for so in libs:
    try:
        ctypes.CDLL(so)
    except OSError as e:
        failed[os.path.basename(so)] = str(e)
[cudnn] = [p for p in libs if os.path.basename(p) == "libcudnn.so.9"]
out.update(libs=len(libs), failed=failed, cudnnGetVersion=ctypes.CDLL(cudnn).cudnnGetVersion())
x = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
out["conv"] = list(x.shape)
print(json.dumps(out))
"""


def optional_transport_libs() -> list[str]:
    expr = f"""(import {h.ROOT}/nix/python.nix {{ pkgs = {{ }}; lib = import {h.SHARED_INPUTS}/nixpkgs-lib/lib;
                pyproject-nix = null; uv2nix = null; pyproject-build-systems = null; }}).optionalTransportLibs"""
    return json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout)


@pytest.fixture(scope="module")
def venv():
    base = h.workdir()
    core = h.git_input(h.git_repo(base / "src" / "comfyui", {"main.py": "print('core')\n"}), "comfyui")
    flake = h.make_flake(base / "flake", {"gpu": h.version_lock("gpu", core, torch="pypi")})
    ov = h.stand_ins(base / "stand-in")
    assert ov[:2] == ["--override-input", "nixpkgs"] and len(ov) == 3  # the three pyproject-nix inputs are real
    p = h.nix("build", "--json", "--no-link", f"{flake}#packages.{h.SYSTEM}.version-gpu.venv", *ov, timeout=3600)
    venv = Path(json.loads(p.stdout)[0]["outputs"]["out"])
    h.built_outputs.append(str(venv))
    # 3.3 GB the built packages no longer need
    h.delete_if_dead(*h.fetched_wheels(h.EXAMPLE_PYTHON / "uv.lock"), closure=False)
    return venv


def test_the_env_runs_torch_and_loads_every_cuda_library_with_no_host_site_packages(venv):
    p = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"{venv}/bin/python", "-I", "-c", PROBE],
                       capture_output=True, text=True, timeout=600, cwd="/")
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["prefix"] == str(venv)
    assert all(e.startswith("/nix/store/") for e in out["path"]), out["path"]  # no host site-packages
    assert out["torch"].startswith("2.") and out["cuda"]
    assert out["cudnn"] // 10000 == 9 and out["cudnnGetVersion"] == out["cudnn"]
    assert out["libs"] >= 40 and out["conv"] == [1, 4, 6, 6]
    optional = optional_transport_libs()
    for so, why in out["failed"].items():
        assert any(lib in why for lib in optional), f"{so}: {why}"


def test_no_runpath_names_a_host_folder(venv):
    """RUNPATHs hold store paths, $ORIGIN and NixOS' driver link only: a host's /usr/lib never leaks in."""
    site = next(venv.glob("lib/python3.*/site-packages"))
    files = sorted({(Path(d) / f).resolve() for d, _, names in os.walk(site, followlinks=True) for f in names
                    if ".so" in f and (Path(d) / f).is_file()})
    assert len(files) > 100
    bad = {}
    for f in files:
        r = subprocess.run(["patchelf", "--print-rpath", str(f)], capture_output=True, text=True)
        if r.returncode:
            continue  # not an ELF file with a dynamic section
        for entry in filter(None, r.stdout.strip().split(":")):
            if not (entry.startswith(("/nix/store/", "$ORIGIN")) or entry == "/run/opengl-driver/lib"):
                bad.setdefault(str(f), []).append(entry)
    assert not bad, dict(list(bad.items())[:5])
