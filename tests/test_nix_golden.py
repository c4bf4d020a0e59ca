"""nix/ functions on fixture locks, compared with golden JSON (uv2nix's test pattern).

Each case is tests/nix/fixtures/<case>/version.json; each result is
tests/nix/expected/<module>.<function>.<case>.json. Evaluated with the real
`nix eval --json`. Set COMFYVER_UPDATE_GOLDEN=1 to rewrite the golden files
after an intended change (then review the diff).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.nix import harness as h

CASES = sorted(p.parent.name for p in h.FIXTURES.glob("*/version.json"))

# Plain-data functions of nix/, called on the validated lock `v`.
FUNCTIONS = {
    "lock.read": "v",
    "sources.plan": "sources.plan v",
    "models.plan": "models.plan v",
    "models.extraModelPaths": "models.extraModelPaths \"/models\" (models.folders v)",
    "image.config": "image.config { id = v.id; entrypoint = \"/entrypoint\"; withModels = false; }",
    "python.pythonAttr": "python.pythonAttr v.id v.python.requires",
}

PRELUDE = f"""
let
  lib = import {h.SHARED_INPUTS}/nixpkgs-lib/lib;
  pkgs = {{ cacert = "/nix/store/00000000000000000000000000000000-nss-cacert"; }};
  lockLib = import {h.ROOT}/nix/lock.nix;
  sources = import {h.ROOT}/nix/sources.nix {{ inherit pkgs; }};
  models = import {h.ROOT}/nix/models.nix {{ inherit pkgs lib; }};
  image = import {h.ROOT}/nix/image.nix {{ inherit pkgs lib; }};
  python = import {h.ROOT}/nix/python.nix {{ inherit pkgs lib; pyproject-nix = null; uv2nix = null; pyproject-build-systems = null; }};
"""  # noqa: E501 - Nix text


def evaluate(case: str, body: str):
    expr = PRELUDE + f'  v = lockLib.read {h.FIXTURES} "{case}";\nin {body}'
    return json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout)


def test_there_are_cases():
    assert {"full", "minimal"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_golden(function, case):
    got = evaluate(case, FUNCTIONS[function])
    path = h.NIX_DIR / "expected" / f"{function}.{case}.json"
    if os.environ.get("COMFYVER_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no golden file {path}; run with COMFYVER_UPDATE_GOLDEN=1 and review it"
    assert got == json.loads(path.read_text())


def test_model_plan_keeps_the_lock_sha256_as_is():
    lock = json.loads((h.FIXTURES / "full" / "version.json").read_text())
    plan = evaluate("full", FUNCTIONS["models.plan"])
    assert {p: e["sha256"] for p, e in plan.items()} == {p: m["locked"]["sha256"] for p, m in lock["models"].items()}


def test_gated_models_pass_the_token_variable_not_a_token():
    plan = evaluate("full", FUNCTIONS["models.plan"])
    gated = {p: e for p, e in plan.items() if "netrcImpureEnvVars" in e}
    assert {p: e["netrcImpureEnvVars"] for p, e in gated.items()} == {
        "loras/gated lora (v2).safetensors": ["HF_TOKEN"],
        "loras/civitai/detail.safetensors": ["CIVITAI_TOKEN"],
        "vae/private.safetensors": ["GOOGLE_OAUTH_ACCESS_TOKEN"],
    }
    assert "$HF_TOKEN" in gated["loras/gated lora (v2).safetensors"]["netrcPhase"]
    assert "netrcPhase" not in plan["checkpoints/sd_xl_base_1.0.safetensors"]
    # a store-safe name for a file name with spaces and parentheses
    assert gated["loras/gated lora (v2).safetensors"]["name"] == "model-gated_lora__v2_.safetensors"
    assert plan["vae/private.safetensors"]["url"] == "https://storage.googleapis.com/team-models/vae/private.safetensors"


@pytest.mark.parametrize("requires,expected", [
    ("==3.12.*", "python312"), ("~=3.11", "python311"), (">=3.11", "python312"), (">=3.13,<3.14", "python313"),
])
def test_python_attr(requires, expected):
    got = h.nix("eval", "--json", "--impure", "--expr",
                PRELUDE + f'in python.pythonAttr "x" "{requires}"').stdout
    assert json.loads(got) == expected


def test_patch_level_python_requires_is_a_named_error():
    """Not a bare uv2nix assert later on: the version and the field are named at evaluation."""
    import subprocess

    expr = PRELUDE + 'in python.pythonAttr "demo" "==3.11.7"'
    p = subprocess.run(["nix", "eval", "--impure", "--expr", expr], capture_output=True, text=True,
                       env={**os.environ, "NIX_CONFIG": "experimental-features = nix-command flakes"})
    assert p.returncode != 0
    assert "version 'demo': python.requires: ==3.11.7 pins a patch release" in p.stderr


def test_docs_name_exactly_the_image_env():
    """docs/nix.md's image config names every variable the image sets and no other (it once named
    TRITON_LIBCUDA_PATH, which no image set)."""
    import re

    text = (h.ROOT / "docs" / "nix.md").read_text()
    para = text[text.index("`Env`:"):text.index("The root file system (`comfyver-rootfs`)")]
    documented = {m.split("=", 1)[0] for m in re.findall(r"`([A-Z][A-Z0-9_]*(?:=[^`]*)?)`", para)}
    env = evaluate("minimal", FUNCTIONS["image.config"])["Env"]
    assert documented == {e.split("=", 1)[0] for e in env}


def test_a_node_recorded_as_it_was_on_disk_is_named_where_nix_would_fetch_it(tmp_path):
    """import --from-install --allow-dirty keeps a pack's archive in the importing machine's cache: the reader
    accepts the lock (comfyver realize uses it there) and the fetch plan stops on that node, naming the way out."""
    lock = json.loads((h.FIXTURES / "full" / "version.json").read_text())
    name = sorted(lock["nodes"])[0]
    lock["nodes"][name]["original"] = {"type": "local", "path": "/workspace/ComfyUI/custom_nodes/mine"}
    lock["nodes"][name]["locked"] = {"type": "zip", "url": "file:///root/.cache/comfyver/local-nodes/a.zip",
                                     "hash": "sha256-" + "A" * 43 + "=", "stripRoot": False}
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "version.json").write_text(json.dumps(lock))
    base = PRELUDE + f'  v = lockLib.read {tmp_path} "full";\nin '
    assert json.loads(h.nix("eval", "--json", "--impure", "--expr", base + f'v.nodes."{name}".original.type').stdout) == "local"
    p = h.nix("eval", "--json", "--impure", "--expr", base + f'(sources.plan v).nodes."{name}".fetcher', check=False)
    assert p.returncode != 0
    assert f"node {name} was recorded as it was on disk" in p.stderr and "comfyver realize" in p.stderr, p.stderr
