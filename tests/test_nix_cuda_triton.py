"""Triton in the image as a GPU host runs it, short of the GPU (torch.compile's kernels on CUDA are triton's).

Before its first kernel, triton finds libcuda's folder with `/sbin/ldconfig -p` (or TRITON_LIBCUDA_PATH), finds
a C compiler ($CC, else `gcc`, else `clang` on PATH) and compiles two modules against libcuda: cuda_utils and the
kernel's launcher. On RunPod the NVIDIA container toolkit injects libcuda.so.1 into /usr/lib/x86_64-linux-gnu and
registers it in the container's /etc/ld.so.cache. Here: image-<id>'s root file system (tests/nix/imageroot.py: the
customisation layer and the image's store paths, chrooted in a private mount namespace, the config's Env), a stub
libcuda.so.1 (every function cuda.h names) in that folder, the toolkit's ldconfig step, then the image's Python
runs tests/nix/triton_probe.py: triton's own libcuda_dirs(), its _build, its CudaUtils and CudaLauncher.

The stand-in glibc's ldconfig reads glibc's own etc/ld.so.cache as nixpkgs' does (so `ldconfig -p` fails on a
bare image here as it does on a real one); the compiler is the host's gcc behind the stand-in's /bin/cc.
This module runs before test_nix_flake (which frees every build at its end), so the two share the built env.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.nix import harness as h
from tests.nix import imageroot

PROBE = (h.NIX_DIR / "triton_probe.py").read_text()


@pytest.fixture(scope="module")
def image():
    base = h.workdir()
    core = h.git_input(h.git_repo(base / "src" / "comfyui", {"main.py": "print('core')\n"}), "comfyui")
    flake = h.make_flake(base / "flake", {"gpu": h.version_lock("gpu", core, torch="pypi")})
    ov = h.stand_ins(base / "stand-in")
    p = h.nix("build", "--json", "--no-link", f"{flake}#image-gpu.stream.conf", *ov, timeout=3600)
    conf_path = json.loads(p.stdout)[0]["outputs"]["out"]
    h.built_outputs.append(conf_path)  # its closure is the image's: test_nix_flake frees it
    h.delete_if_dead(*h.fetched_wheels(h.EXAMPLE_PYTHON / "uv.lock"), closure=False)  # as test_nix_env
    yield {"base": base, "conf": json.loads(Path(conf_path).read_text()), "stand_in": Path(ov[-1].removeprefix("path:"))}
    shutil.rmtree(base, ignore_errors=True)


def probe_in_image(image, tmp_path: Path, ldconfig: str) -> dict:
    conf = image["conf"]
    store = imageroot.unpack(conf, tmp_path / "root")
    [triton] = [p for p in store if p.split("-", 1)[1].startswith("triton-")]
    imageroot.stub_libcuda(next(Path(triton).glob("lib/python3.*/site-packages/triton/backends/nvidia/include/cuda.h")),
                           tmp_path / "driver")
    [env] = [p for p in store if p.endswith("-comfyui-env")]  # the version's env (the worker's is comfyver-env)
    return imageroot.json_tail(imageroot.run(conf, tmp_path / "root", store, tmp_path / "driver",
                                             [f"{env}/bin/python", "-c", PROBE], ldconfig=ldconfig))


@pytest.fixture(scope="module")
def in_image(image, tmp_path_factory):
    """The probe's steps, the toolkit's ldconfig being the host's (its default)."""
    return probe_in_image(image, tmp_path_factory.mktemp("triton-host-ldconfig"), "host")


def test_stand_in_ldconfig_reads_glibcs_own_cache_as_nixpkgs(image, tmp_path):
    """nixpkgs' glibc (dont-use-system-ld-so-cache.patch) compiles its prefix's etc/ld.so.cache and etc/ld.so.conf
    into ldconfig; no glibc holds them. The stand-in's glibc.bin does the same (Debian's reads /etc/ld.so.cache,
    which hid that `ldconfig -p` fails in a real image); a caller's -C still wins."""
    pkgs = f"path:{image['stand_in']}#legacyPackages.{h.SYSTEM}"
    ldconfig = Path(json.loads(h.nix("build", "--json", "--no-link", f"{pkgs}.glibc.bin").stdout)[0]["outputs"]["out"])
    glibc = h.nix("eval", "--raw", f"{pkgs}.glibc.outPath").stdout
    p = subprocess.run([ldconfig / "bin/ldconfig", "-p"], capture_output=True, text=True)
    assert p.returncode == 1 and f"Can't open cache file {glibc}/etc/ld.so.cache" in p.stderr, p.stderr
    libs = tmp_path / "lib"
    libs.mkdir()
    shutil.copy2(glibc + "/lib/libm.so.6", libs / "libm.so.6")
    cache = tmp_path / "ld.so.cache"
    subprocess.run([ldconfig / "bin/ldconfig", "-X", "-f", "/dev/null", "-C", cache, libs], check=True)
    listed = subprocess.run([ldconfig / "bin/ldconfig", "-C", cache, "-p"], capture_output=True, text=True, check=True)
    assert f"libm.so.6 (libc6,x86-64) => {libs}/libm.so.6" in listed.stdout


def test_triton_finds_libcuda_where_the_toolkit_registered_it(in_image):
    """`/sbin/ldconfig -p` reads the /etc/ld.so.cache the toolkit wrote (nixpkgs' ldconfig alone reads glibc's own
    and exits 1: triton's libcuda_dirs() raises CalledProcessError)."""
    assert in_image["ldconfig"]["value"] == {"rc": 0, "stderr": "", "libcuda": [f"{imageroot.DRIVER_DIR}/libcuda.so.1"]}
    assert in_image["libcuda_dirs"] == {"ok": True, "value": [imageroot.DRIVER_DIR]}


def test_triton_finds_a_compiler_and_compiles_with_its_flags(in_image):
    """triton.runtime.build._build: $CC (the image's /bin/cc; triton never looks up `cc`, and PATH has no gcc or
    clang), -O3 -shared -fPIC, the interpreter's Python.h."""
    assert in_image["compiler"] == {"ok": True, "value": {"cc": "/bin/cc", "built": True}}, in_image["compiler"]


def test_triton_builds_and_loads_its_launcher_against_the_injected_libcuda(in_image):
    assert in_image["launcher"] == {"ok": True, "value": {
        "launch": True, "built": ["__triton_launcher", "cuda_utils"],
        "libcuda_loaded": [f"{imageroot.DRIVER_DIR}/libcuda.so.1"]}}, in_image["launcher"]


def test_the_images_own_ldconfig_writes_the_cache_it_reads(image, tmp_path):
    """A toolkit configured to run the container's ldconfig (`ldconfig = "/sbin/ldconfig"`, no "@") runs the image's
    /sbin/ldconfig with -f /etc/ld.so.conf -C /etc/ld.so.cache: the cache triton then reads."""
    got = probe_in_image(image, tmp_path, "image")
    assert got["libcuda_dirs"] == {"ok": True, "value": [imageroot.DRIVER_DIR]}, got
    assert got["launcher"]["ok"], got["launcher"]
