"""The GPU pre-flight (handler/preflight.py), a RunPod fitness check. This machine has no GPU: the check must
fail, saying what to do; a CPU worker skips it; the worker registers it with the SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from handler import preflight
from handler.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_no_gpu_fails_with_what_to_do(monkeypatch):
    for k in ("COMFY_ARGS", "COMFY_GPU_CHECK", "RUNPOD_SKIP_GPU_CHECK"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert preflight.wanted(s)
    with pytest.raises(RuntimeError) as info:
        preflight.gpu_preflight(s)  # the test venv's torch (CUDA wheels on a machine without a GPU)
    msg = str(info.value)
    assert "GPU pre-flight failed: torch.cuda.is_available() is False" in msg
    assert "minCudaVersion" in msg and "COMFY_GPU_CHECK=0" in msg


def test_an_interpreter_that_cannot_run_it_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("COMFY_PYTHON", sys.executable)
    s = Settings()
    s.comfy_python = str(tmp_path / "no-python")
    with pytest.raises(RuntimeError, match="could not run the check"):
        preflight.gpu_preflight(s)


@pytest.mark.parametrize("env, wanted", [({"COMFY_ARGS": "--cpu"}, False), ({"COMFY_GPU_CHECK": "0"}, False),
                                         ({"RUNPOD_SKIP_GPU_CHECK": "true"}, False), ({"COMFY_ARGS": "--lowvram"}, True)])
def test_a_cpu_worker_or_the_switch_skips_it(monkeypatch, env, wanted):
    for k in ("COMFY_ARGS", "COMFY_GPU_CHECK", "RUNPOD_SKIP_GPU_CHECK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert preflight.wanted(Settings()) is wanted


def test_it_is_registered_as_a_fitness_check(monkeypatch):
    from runpod.serverless.modules import rp_fitness

    for k in ("COMFY_ARGS", "COMFY_GPU_CHECK", "RUNPOD_SKIP_GPU_CHECK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(rp_fitness, "_fitness_checks", [])
    assert preflight.register(Settings())
    assert [f.__name__ for f in rp_fitness._fitness_checks] == ["comfyver_gpu_preflight"]


def test_by_hand(monkeypatch):
    p = subprocess.run([sys.executable, "-m", "handler", "preflight"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert p.returncode == 1 and "GPU pre-flight failed" in p.stderr
