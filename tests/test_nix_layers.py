"""Image layers that last: a version of 20 nodes + 10 models keeps each node, model and the tree in a layer of
its own, and an image whose closure would make dockerTools merge paths into one shared layer fails its build
with image.nix's layer check (naming maxLayers, the closure's size, the merged paths and the fix).

The stand-in nixpkgs' dockerTools runs nixpkgs' own closure-graph.py (popularity order) and puts the paths past
its limit into one last layer, as nixpkgs does. The versions carry a small CPU Python set (`six`, locked by uv):
what is measured is the layer plan, not the env.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nix import harness as h

NODE = "NODE_CLASS_MAPPINGS = {{'LayerNode{n}': type('N{n}', (), {{}})}}\n"


def small_python_project(dest: Path) -> Path:
    """pyproject.toml + uv.lock of a version whose Python set is `six` alone (CPU)."""
    dest.mkdir(parents=True)
    (dest / "pyproject.toml").write_text(
        '[project]\nname = "comfyver-version"\nversion = "0"\nrequires-python = "==3.11.*"\n'
        'dependencies = ["six"]\n\n[tool.uv]\npackage = false\n'
        "environments = [\"sys_platform == 'linux' and platform_machine == 'x86_64'\"]\n")
    uv = shutil.which("uv") or str(Path(sys.prefix) / "bin" / "uv")
    subprocess.run([uv, "lock", "-q", "--project", str(dest)], check=True)
    return dest


def wide_version(src: Path, vid: str, core: dict, nodes: int, models: int, pad: int = 0) -> dict:
    node_inputs = {f"node-{i:02d}": h.git_input(h.git_repo(src / vid / f"node-{i:02d}", {"__init__.py": NODE.format(n=i)}),
                                              f"node-{i:02d}") for i in range(nodes)}
    model_inputs = {f"checkpoints/m{i:03d}.safetensors": h.model_input(src / vid / "files" / f"m{i:03d}.safetensors",
                                                                      f"{vid} model {i}\n".encode() * 64)
                    for i in range(models)}
    model_inputs |= {f"pad/p{i:03d}.bin": h.model_input(src / vid / "pad" / f"p{i:03d}.bin", f"{vid} pad {i}\n".encode())
                     for i in range(pad)}
    return h.version_lock(vid, core, node_inputs, model_inputs)


@pytest.fixture(scope="module")
def flake():
    base = h.workdir("comfyver-nix-layers-")
    try:
        core = h.git_input(h.git_repo(base / "src" / "comfyui", {"main.py": "print('core')\n"}), "comfyui")
        # the stand-in's closure has about 20 paths before nodes and models, a real nixpkgs one 75-80: 60 small
        # files more make this image's closure as large as the real one's (over the 99 paths maxLayers = 100 gave)
        versions = {"wide": wide_version(base / "src", "wide", core, 20, 10, pad=60),
                    # past maxLayers with any closure: the check must fail it
                    "too-wide": wide_version(base / "src", "too-wide", core, 20, 120)}
        project = small_python_project(base / "python")
        flake = h.make_flake(base / "flake", versions, python_project=project)
        ov = h.stand_ins(base / "stand-in")
        yield {"flake": flake, "ov": ov, "versions": versions}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def build(env: dict, attr: str, check: bool = True) -> subprocess.CompletedProcess:
    return h.nix("build", "--json", "--no-link", "-L", f"{env['flake']}#packages.{h.SYSTEM}.{attr}", *env["ov"],
                 check=check, timeout=3600)


def out(p: subprocess.CompletedProcess) -> Path:
    return Path(json.loads(p.stdout)[0]["outputs"]["out"])


def test_twenty_nodes_and_ten_models_each_keep_a_layer_of_their_own(flake):
    image = build(flake, "image-wide-with-models")
    conf = json.loads(out(build(flake, "image-wide-with-models.stream.conf")).read_text())
    layers = conf["store_layers"]
    names = [[p.split("-", 1)[1] for p in layer] for layer in layers]
    own = {n[0] for n in names if len(n) == 1}
    assert all(len(n) == 1 for n in names), [n for n in names if len(n) > 1]
    assert {f"node-node-{i:02d}-source" for i in range(20)} <= own
    assert {f"model-m{i:03d}.safetensors" for i in range(10)} <= own
    assert "comfyui-wide" in own and "comfyui-source" in own  # the tree, the core
    assert len(layers) >= 105  # a real closure's size
    summary = json.loads(out(build(flake, "image-wide-with-models.layerCheck")).read_text())
    assert summary == {"maxLayers": 125, "storeLayers": len(layers), "paths": len(layers), "merged": []}
    print(f"\nimage-wide-with-models: {len(layers)} store layers (stand-in closure), maxLayers 125")
    h.delete_if_dead(out(image), closure=False)


def test_an_image_that_would_merge_changing_paths_fails_with_the_layer_check(flake):
    p = build(flake, "image-too-wide-with-models", check=False)
    assert p.returncode != 0
    err = p.stderr
    assert "comfyver: comfyver-too-wide-with-models: the image's closure has " in err, err[-3000:]
    assert "but maxLayers = 125 gives only 123 of them a layer of their own" in err
    assert "model-m119.safetensors" in err or "node-node-" in err  # the least popular: what changes
    assert "Fix: build the image without models (image-<id>: models come from /runpod-volume/models)" in err
    assert "raise maxLayers in nix/image.nix" in err
    # without models the same version fits: the check passes and the plan has one path per layer
    summary = json.loads(out(build(flake, "image-too-wide.layerCheck")).read_text())
    assert summary["merged"] == [] and summary["paths"] == summary["storeLayers"] <= 123, summary


def test_the_layer_check_is_part_of_the_image_build(flake):
    """`nix build .#image-<id>` builds the check first: the archive's derivation depends on it."""
    drvs = h.show_derivation(flake["flake"], f"packages.{h.SYSTEM}.image-wide", flake["ov"])
    [image] = [d for d in drvs.values() if d["env"].get("name") == "comfyver-wide.tar.zst"]
    checks = [p for p, d in drvs.items() if d["env"].get("name") == "comfyver-wide-layer-check"]
    assert len(checks) == 1 and checks[0] in image["inputDrvs"]
    assert os.path.basename(image["env"]["comfyverLayerCheck"]).endswith("-comfyver-wide-layer-check")
