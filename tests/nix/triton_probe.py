"""Run in an image's root by the image's Python (tests/nix/imageroot.py): what triton does on its first kernel
before any GPU work, step by step, as one JSON line. Triton 3.x (triton/backends/nvidia/driver.py,
triton/runtime/build.py)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

out: dict = {"python": sys.executable}


def step(name, f):
    try:
        out[name] = {"ok": True, "value": f()}
    except BaseException as e:  # noqa: BLE001 - every failure is a result
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}


def ldconfig():
    """What triton's libcuda_dirs() reads: `/sbin/ldconfig -p`."""
    p = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True)
    return {"rc": p.returncode, "stderr": p.stderr.strip()[-500:],
            "libcuda": [line.split()[-1] for line in p.stdout.splitlines() if "libcuda.so.1" in line]}


def compiler():
    """triton.runtime.build._build on a tiny C file that includes Python.h: its compiler lookup ($CC, else gcc,
    else clang on PATH) and its flags (-O3 -shared -fPIC -Wno-psabi, the interpreter's include folder)."""
    from triton.runtime import build
    d = tempfile.mkdtemp()
    src = os.path.join(d, "probe.c")
    with open(src, "w") as f:
        f.write("#include <Python.h>\nint comfyver_probe(void) { return PY_MAJOR_VERSION; }\n")
    so = build._build("probe", src, d, [], [], [], [])
    return {"cc": os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang"), "built": os.path.isfile(so)}


def launcher():
    """The two modules triton compiles and loads before a kernel runs: cuda_utils (CudaDriver's utils) and the
    kernel's __triton_launcher, both linked with -l:libcuda.so.1 -L<libcuda_dirs()>."""
    from triton.backends.nvidia import driver
    driver.CudaUtils()
    src = types.SimpleNamespace(constants={}, signature={"x": "*fp32", "n": "i32"},
                                fn=types.SimpleNamespace(arg_names=["x", "n"]))
    meta = types.SimpleNamespace(global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
                                 profile_scratch_align=1, launch_cooperative_grid=False, launch_pdl=False,
                                 num_ctas=1, tensordesc_meta=None)
    launch = driver.CudaLauncher(src, meta).launch
    with open("/proc/self/maps") as f:
        libcuda = sorted({line.split()[-1] for line in f if line.rstrip().endswith("/libcuda.so.1")})
    cache = os.path.join(os.environ["HOME"], ".triton", "cache")
    built = sorted(n.split(".")[0] for _, _, files in os.walk(cache) for n in files if n.endswith(".so"))
    return {"launch": callable(launch), "built": built, "libcuda_loaded": libcuda}


step("ldconfig", ldconfig)
step("libcuda_dirs", lambda: __import__("triton.backends.nvidia.driver", fromlist=["x"]).libcuda_dirs())
step("compiler", compiler)
step("launcher", launcher)
print(json.dumps(out))
