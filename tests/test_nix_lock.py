"""Bad locks fail at evaluation, naming the version and the field (nix/lock.nix)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from tests.nix import harness as h

BASE = json.loads((h.FIXTURES / "full" / "version.json").read_text())


def read(tmp_path, lock, vid: str = "bad"):
    vdir = tmp_path / "versions" / vid
    vdir.mkdir(parents=True)
    (vdir / "version.json").write_text(json.dumps(lock))
    expr = f'let l = (import {h.ROOT}/nix/lock.nix).read {tmp_path}/versions "{vid}"; in builtins.deepSeq l true'
    return h.nix("eval", "--json", "--impure", "--expr", expr, check=False)


def bad(mutate):
    lock = copy.deepcopy(BASE)
    lock["id"] = "bad"
    mutate(lock)
    return lock


def _set(path, value):
    def f(lock):
        d = lock
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


def _del(path):
    def f(lock):
        d = lock
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return f


def _model(path, entry):
    def f(lock):
        lock["models"][path] = entry
    return f


MODEL = BASE["models"]["checkpoints/sd_xl_base_1.0.safetensors"]

CASES = {
    "schema": (_set(["schema"], 2), "schema: expected 1"),
    "id": (_set(["id"], "other"), "id: expected \"bad\""),
    "core-hash": (_set(["comfyui", "locked", "hash"], "sha256-short="), "comfyui.locked.hash: expected an SRI sha256"),
    "core-rev": (_set(["comfyui", "locked", "rev"], "abc123"), "comfyui.locked.rev: expected a full git commit"),
    "core-url-scheme": (_set(["comfyui", "locked", "url"], "ext::sh -c touch% /tmp/pwned"), "comfyui.locked.url"),
    "core-url-password": (_set(["comfyui", "locked", "url"], "https://user:secret@example.com/x.git"),
                          "comfyui.locked.url: the URL carries a password"),
    "core-missing-rev": (_del(["comfyui", "locked", "rev"]), "comfyui.locked.rev: missing"),
    "core-typo": (_set(["comfyui", "locked", "sumbodules"], False), "comfyui.locked: unknown key 'sumbodules'"),
    "node-type": (_set(["nodes", "rgthree-comfy", "locked", "type"], "tarball"),
                  "nodes.rgthree-comfy.locked.type: expected \"git\" or \"zip\""),
    "node-strip": (_del(["nodes", "rgthree-comfy", "locked", "stripRoot"]), "nodes.rgthree-comfy.locked.stripRoot: missing"),
    "node-writable": (_set(["nodes", "rgthree-comfy", "writable"], "yes"),
                      "nodes.rgthree-comfy.writable: expected true or false"),
    "node-name": (_set(["nodes", "-x"], BASE["nodes"]["comfyui-kjnodes"]), "nodes.-x: node name must match"),
    "model-traversal": (_model("checkpoints/../../etc/passwd", MODEL), "models.\"checkpoints/../../etc/passwd\": a model path"),
    "model-absolute": (_model("/etc/passwd", MODEL), "models.\"/etc/passwd\""),
    "model-sha": (_set(["models", "checkpoints/sd_xl_base_1.0.safetensors", "locked", "sha256"], "ABC"),
                  "models.\"checkpoints/sd_xl_base_1.0.safetensors\".locked.sha256: expected a sha256 in hex"),
    "model-token-url": (_set(["models", "checkpoints/sd_xl_base_1.0.safetensors", "locked", "url"],
                             "https://civitai.com/api/download/models/1?token=abc"),
                        "locked.url: the URL carries a token in its query"),
    "model-auth": (_set(["models", "checkpoints/sd_xl_base_1.0.safetensors", "locked", "auth"], "basic"),
                   "locked.auth: expected \"hf\", \"civitai\" or \"gcs\""),
    "model-size": (_set(["models", "checkpoints/sd_xl_base_1.0.safetensors", "locked", "size"], -1),
                   "locked.size: expected a size in bytes"),
    "torch": (_set(["python", "torch"], "rocm"), "python.torch: expected one of cu128"),
    "python-missing": (_del(["python"]), "version.json.python: missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_lock_names_version_and_field(tmp_path, case):
    mutate, field = CASES[case]
    p = read(tmp_path, bad(mutate))
    assert p.returncode == 1, p.stdout
    assert "comfyver: version 'bad': " in p.stderr, p.stderr
    assert field in p.stderr, p.stderr
    assert "versions/bad/version.json" in p.stderr  # what to fix


def test_good_lock_reads(tmp_path):
    p = read(tmp_path, bad(lambda lock: None))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) is True


def test_folder_name_is_checked(tmp_path):
    lock = bad(lambda lock: None)
    lock["id"] = "Bad Name"
    p = read(tmp_path, lock, vid="Bad Name")
    assert p.returncode == 1 and "versions/Bad Name: a version folder name must match" in p.stderr


def test_default_is_reserved(tmp_path):
    p = read(tmp_path, {**bad(lambda lock: None), "id": "default"}, vid="default")
    assert p.returncode == 1 and "\"default\" is reserved" in p.stderr


def test_ids_lists_only_folders_with_a_lock(tmp_path):
    (tmp_path / "versions" / "a").mkdir(parents=True)
    (tmp_path / "versions" / "a" / "version.json").write_text("{}")
    (tmp_path / "versions" / "no-lock").mkdir()
    (tmp_path / "versions" / ".keep").write_text("")
    p = h.nix("eval", "--json", "--impure", "--expr", f"(import {h.ROOT}/nix/lock.nix).ids {tmp_path}/versions")
    assert json.loads(p.stdout) == ["a"]
    shutil.rmtree(tmp_path / "versions")
    p = h.nix("eval", "--json", "--impure", "--expr", f"(import {h.ROOT}/nix/lock.nix).ids {tmp_path}/versions")
    assert json.loads(p.stdout) == []


def test_what_lock_writes_for_pins_and_extra_requirements_reads(tmp_path):
    """`lock --sha256 --size` writes locked.unverified and original.size, `lock --pip` writes python.extra:
    the Nix reader accepts both (and still refuses a wrong value)."""
    def pinned(lock):
        key = next(iter(lock["models"]))
        lock["models"][key]["original"]["size"] = lock["models"][key]["locked"]["size"]
        lock["models"][key]["original"]["sha256"] = lock["models"][key]["locked"]["sha256"]
        lock["models"][key]["locked"]["unverified"] = True
        lock["python"]["extra"] = ["soundfile>=0.12"]
        lock["python"]["constraints"] = ["numpy==1.26.4"]  # import --from-install: the venv's versions
    p = read(tmp_path, bad(pinned))
    assert p.returncode == 0, p.stderr

    def wrong(lock):
        pinned(lock)
        lock["python"]["extra"] = "soundfile"
    p = read(tmp_path / "w", bad(wrong))
    assert p.returncode != 0 and "python.extra" in p.stderr

    def wrong_constraints(lock):
        pinned(lock)
        lock["python"]["constraints"] = "numpy"
    p = read(tmp_path / "c", bad(wrong_constraints))
    assert p.returncode != 0 and "python.constraints" in p.stderr


def test_a_model_a_workflow_named_reads(tmp_path):
    """`lock` marks a model whose source a workflow named with `"from": "workflow"` (issue 24 L1): the Nix
    reader accepts it, and refuses any other value."""
    def marked(value):
        def f(lock):
            lock["models"][next(iter(lock["models"]))]["from"] = value
        return f
    p = read(tmp_path, bad(marked("workflow")))
    assert p.returncode == 0, p.stderr
    p = read(tmp_path / "w", bad(marked("user")))
    assert p.returncode != 0 and ".from: expected \"workflow\"" in p.stderr


def test_the_platforms_lock_writes_read_and_a_lock_without_linux_is_refused(tmp_path):
    """`lock --platform` writes python.platforms (versions/public has it): the flake reads it; a lock resolved
    for macOS only cannot build the x86_64-linux env, and says how to re-lock."""
    for i, (value, needle) in enumerate([(["linux-x86_64"], None), (["linux-x86_64", "macos-arm64"], None),
                                         (["macos-arm64"], "--platform linux-x86_64"), ([], "non-empty list"),
                                         (["windows"], "non-empty list")]):
        p = read(tmp_path / str(i), bad(_set(["python", "platforms"], value)))
        if needle is None:
            assert p.returncode == 0, p.stderr
        else:
            assert p.returncode != 0 and "python.platforms" in p.stderr and needle in p.stderr, p.stderr
