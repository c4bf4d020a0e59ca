"""GPU pre-flight, registered as a RunPod fitness check (runpod>=1.9): before the worker takes a job, the version's
own torch (the interpreter ComfyUI runs on) initialises CUDA, runs a small matmul on the GPU and reads its memory.
A worker on a host whose driver or GPU cannot run the version then fails at start, saying what to do, instead of
failing its jobs one by one (RunPod marks it unhealthy and replaces it).

Skipped for a CPU worker (`--cpu` in COMFY_ARGS), with COMFY_GPU_CHECK=0 and with RUNPOD_SKIP_GPU_CHECK=true (the
SDK's switch for its own GPU check). RunPod runs fitness checks on its
platform only (not under `--rp_serve_api`); `python -m handler preflight` runs the same check by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys

from handler.settings import Settings

SCRIPT = r"""
import json
out = {}
try:
    import torch
    out["torch"], out["cuda"] = torch.__version__, torch.version.cuda
    if not torch.cuda.is_available():
        out["error"] = "torch.cuda.is_available() is False"
    else:
        a = torch.randn(256, 256, device="cuda")
        out["matmul"] = float((a @ a).abs().sum().item())
        torch.cuda.synchronize()
        p = torch.cuda.get_device_properties(0)
        out["gpu"], out["vram_gb"] = p.name, p.total_memory / 2**30
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def wanted(settings: Settings) -> bool:
    return settings.gpu_check and "--cpu" not in settings.comfy_args


def gpu_preflight(settings: Settings, timeout: float = 180) -> dict[str, object]:
    """Run the check on ComfyUI's interpreter; return what it found, or raise RuntimeError with what to do."""
    python = settings.comfy_python or sys.executable
    try:
        p = subprocess.run([python, "-c", SCRIPT], capture_output=True, text=True, timeout=timeout)
        found = json.loads(p.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"GPU pre-flight: CUDA did not initialise within {timeout:.0f} s on {python}") from None
    except (OSError, ValueError, IndexError):
        raise RuntimeError(f"GPU pre-flight: {python} could not run the check: "
                           f"{(p.stderr or '').strip()[-500:] if 'p' in locals() else 'not runnable'}") from None
    if "error" in found:
        cuda = found.get("cuda")
        raise RuntimeError(
            f"GPU pre-flight failed: {found['error']} (torch {found.get('torch')}, built for CUDA {cuda}). "
            + (f"This host's NVIDIA driver must support CUDA {cuda}: deploy with the lock's CUDA floor "
               "(comfyver deploy sets the endpoint's minCudaVersion) or choose GPU types whose hosts have it; "
               if cuda else "The version's torch has no CUDA: lock it with a CUDA torch profile, or run with "
                            "COMFY_ARGS=--cpu; ")
            + "COMFY_GPU_CHECK=0 skips this check.")
    vram = found.get("vram_gb")
    if settings.min_vram_gb and isinstance(vram, float) and vram < settings.min_vram_gb:
        raise RuntimeError(f"GPU pre-flight: {found.get('gpu')} has {vram:.1f} GiB, COMFY_MIN_VRAM_GB asks for "
                           f"{settings.min_vram_gb:g}: deploy on larger GPU types")
    return found


def register(settings: Settings) -> bool:
    """Register the check with the runpod SDK (it runs registered checks before the first job); False if skipped."""
    if not wanted(settings):
        return False
    import runpod

    def comfyver_gpu_preflight() -> None:
        gpu_preflight(settings)

    runpod.serverless.register_fitness_check(comfyver_gpu_preflight)
    return True
