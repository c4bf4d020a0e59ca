"""The import chain on one install (issue 26): `comfyver import --from-install` of a working install with 5 nodes
and 5 models → `comfyver realize` elsewhere → `comfyver verify --deep` gives the same ComfyUI: the same revs, the
same model bytes, the Python set uv.lock names. The install's core is a small stand-in (its requirements: six) so
its Python set can be realized here; its sources are served by the test git server, as GitHub would serve them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from comfyver import cli

from tests.support.gitserver import git, make_repo
from tests.test_realize_helpers import FAKE_CORE

PACKS = [f"pack-{c}" for c in "abcde"]
GITIGNORE = "__pycache__/\n/models/\n/custom_nodes/\n!custom_nodes/example_node.py.example\n"  # ComfyUI's own rules
MODELS = {"checkpoints/base.safetensors": 400_000, "loras/style.safetensors": 30_000,
          "loras/people/face.safetensors": 20_000, "vae/ae.safetensors": 50_000, "upscale_models/x2.pth": 10_000}


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


def run(capsys, *args) -> tuple[int, dict]:
    rc = cli.main([*args, "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else {"stderr": out.err})


def head(d: Path) -> str:
    return git("rev-parse", "HEAD", cwd=d).strip()


def test_import_realize_elsewhere_verify_gives_the_same_comfyui(tmp_path, git_server, monkeypatch, capsys):
    work = tmp_path / "upstream"
    make_repo(work / "core", {**FAKE_CORE, ".gitignore": GITIGNORE})
    core_url = git_server.publish(work / "core", "ComfyUI")
    install = tmp_path / "pod" / "ComfyUI"
    git("clone", "-q", core_url, str(install))
    for i, name in enumerate(PACKS):
        files = {"__init__.py": f"NODE_CLASS_MAPPINGS = {{'Node{i}': object}}\n"}
        if i == 0:
            files["requirements.txt"] = "six\n"
        make_repo(work / name, files)
        git("clone", "-q", git_server.publish(work / name, name), str(install / "custom_nodes" / name))
    for key, size in MODELS.items():
        f = install / "models" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(hashlib.sha256(key.encode()).digest() * (size // 32))
    proj = tmp_path / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    monkeypatch.chdir(proj)
    monkeypatch.setenv("COMFYVER_MODELS", str(tmp_path / "store"))

    rc, res = run(capsys, "import", "pod", "--from-install", str(install))
    assert rc == 0, json.dumps(res, indent=1)
    lock = json.loads((proj / "versions/pod/version.json").read_text())
    assert sorted(lock["nodes"]) == PACKS and sorted(lock["models"]) == sorted(MODELS)

    elsewhere = tmp_path / "elsewhere"
    rc, res = run(capsys, "realize", "pod", "--into", str(elsewhere))
    assert rc == 0, res
    rc, res = run(capsys, "verify", "pod", "--dir", str(elsewhere), "--deep")
    assert rc == 0, res

    # the same ComfyUI: the install's revs, its model bytes, the Python set uv.lock names
    marker = json.loads((elsewhere / ".comfyver-realized.json").read_text())
    assert marker["comfyui"]["rev"] == head(install)
    assert {n: r["rev"] for n, r in marker["nodes"].items()} == {n: head(install / "custom_nodes" / n) for n in PACKS}
    for key in MODELS:
        assert (elsewhere / "models" / key).read_bytes() == (install / "models" / key).read_bytes(), key
    for name in PACKS:
        assert (elsewhere / "custom_nodes" / name / "__init__.py").read_bytes() == \
            (install / "custom_nodes" / name / "__init__.py").read_bytes()
    six = subprocess.run([str(elsewhere / ".venv/bin/python"), "-c", "import six; print(six.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert f'name = "six"\nversion = "{six}"' in (proj / "versions/pod/uv.lock").read_text()


def test_allow_dirty_records_packs_as_they_are_on_disk_and_realize_gives_them_back(tmp_path, git_server, monkeypatch,
                                                                                    capsys):
    """--allow-dirty: a pack with a local edit, an untracked file and a local commit, and a folder that is no git
    checkout, are recorded as they are on disk (an archive in the comfyver cache, by its NAR hash); realized
    elsewhere they hold exactly those bytes (not .git, not byte-code), `verify --deep` passes, and a second import
    of the unchanged install records the same hashes. Without the flag they are refused, as before."""
    work = tmp_path / "upstream"
    make_repo(work / "core", {**FAKE_CORE, ".gitignore": GITIGNORE})
    install = tmp_path / "pod" / "ComfyUI"
    git("clone", "-q", git_server.publish(work / "core", "ComfyUI"), str(install))
    make_repo(work / "pack-a", {"__init__.py": "NODE_CLASS_MAPPINGS = {'NodeA': object}\n"})
    dirty = install / "custom_nodes" / "pack-a"
    git("clone", "-q", git_server.publish(work / "pack-a", "pack-a"), str(dirty))
    (dirty / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'NodeA': object, 'MyFix': object}\n")  # local edit
    (dirty / "notes.txt").write_text("mine")                                                         # untracked
    (dirty / "tool.sh").write_text("#!/bin/sh\n")
    (dirty / "tool.sh").chmod(0o755)
    (dirty / "__pycache__").mkdir()
    (dirty / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    plain = install / "custom_nodes" / "my-pack"
    (plain / "sub").mkdir(parents=True)
    (plain / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'Mine': object}\n")
    (plain / "sub" / "data.json").write_text("{}")
    proj = tmp_path / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    monkeypatch.chdir(proj)

    rc, res = run(capsys, "import", "refused", "--from-install", str(install), "--no-python")
    assert rc == 1 and {p["item"] for p in res["problems"]} == {"custom_nodes/pack-a", "custom_nodes/my-pack"}, res
    monkeypatch.setenv("COMFYVER_MODELS", str(tmp_path / "store"))
    rc, res = run(capsys, "import", "pod", "--from-install", str(install), "--allow-dirty")
    assert rc == 0, json.dumps(res, indent=1)
    lock = json.loads((proj / "versions/pod/version.json").read_text())
    assert lock["nodes"]["pack-a"]["original"] == {"type": "local", "path": str(dirty)}
    assert lock["nodes"]["my-pack"]["original"] == {"type": "local", "path": str(plain)}
    assert lock["nodes"]["pack-a"]["locked"]["url"].startswith("file://") and not lock["nodes"]["pack-a"]["locked"][
        "stripRoot"]
    assert sorted(lock["nodes"]["pack-a"]["provides"]) == ["MyFix", "NodeA"]  # the edit, scanned
    notes = " ".join(res["notes"])
    assert "custom_nodes/pack-a: recorded as it is on disk" in notes and "1 changed file(s): __init__.py" in notes
    assert "Nix and other machines cannot fetch it" in notes
    assert cli.main(["show", "pod"]) == 0
    shown = capsys.readouterr().out
    assert "local" in shown and "as it was on disk" in shown and "None @" not in shown

    elsewhere = tmp_path / "elsewhere"
    rc, res = run(capsys, "realize", "pod", "--into", str(elsewhere))
    assert rc == 0, res
    rc, res = run(capsys, "verify", "pod", "--dir", str(elsewhere), "--deep")
    assert rc == 0, res
    for name, src in (("pack-a", dirty), ("my-pack", plain)):
        dest = elsewhere / "custom_nodes" / name
        got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
        want = sorted(str(p.relative_to(src)) for p in src.rglob("*") if ".git" not in p.parts
                      and "__pycache__" not in p.parts)
        assert got == want, (name, got, want)
        for rel in want:
            if (src / rel).is_file():
                assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert (elsewhere / "custom_nodes" / "pack-a" / "tool.sh").stat().st_mode & 0o111  # the exec bit kept

    rc, res = run(capsys, "import", "pod2", "--from-install", str(install), "--no-python", "--allow-dirty")
    assert rc == 0, res
    again = json.loads((proj / "versions/pod2/version.json").read_text())
    assert {n: v["locked"] for n, v in again["nodes"].items()} == {n: v["locked"] for n, v in lock["nodes"].items()}


def test_allow_dirty_names_what_a_pack_holds_before_any_model_is_hashed(tmp_path, git_server, monkeypatch, capsys):
    """A link or a pipe inside a pack taken as it is on disk: each named, by the pack's folder, in the import's one
    problem list, before any model is hashed; a checkout with no commit yet is taken as it is."""
    import os

    from comfyver.lock import install as install_mod

    work = tmp_path / "upstream"
    make_repo(work / "core", {**FAKE_CORE, ".gitignore": GITIGNORE})
    install = tmp_path / "pod" / "ComfyUI"
    git("clone", "-q", git_server.publish(work / "core", "ComfyUI"), str(install))
    bad = install / "custom_nodes" / "bad-pack"
    bad.mkdir(parents=True)
    (bad / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (bad / "link").symlink_to("/etc/hostname")
    os.mkfifo(bad / "pipe")
    unborn = install / "custom_nodes" / "unborn"
    unborn.mkdir()
    git("init", "-q", cwd=unborn)
    (unborn / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'U': object}\n")
    (install / "models" / "loras").mkdir(parents=True)
    (install / "models" / "loras" / "a.safetensors").write_bytes(b"a" * 1000)
    proj = tmp_path / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    monkeypatch.chdir(proj)
    rc, res = run(capsys, "import", "pod", "--from-install", str(install), "--no-python", "--allow-dirty")
    assert rc == 1, res
    problems = sorted((p["item"], p["problem"]) for p in res["problems"])
    assert [i for i, _ in problems] == ["custom_nodes/bad-pack", "custom_nodes/bad-pack"], problems
    assert "link: a symbolic link" in problems[0][1] and "pipe: not a regular file" in problems[1][1]
    assert not (tmp_path / "cache" / install_mod.CACHE_NAME).exists()  # refused before any model was hashed
    (bad / "link").unlink()
    (bad / "pipe").unlink()
    rc, res = run(capsys, "import", "pod", "--from-install", str(install), "--no-python", "--allow-dirty")
    assert rc == 0, res
    lock = json.loads((proj / "versions/pod/version.json").read_text())
    assert lock["nodes"]["unborn"]["original"]["type"] == "local" and lock["nodes"]["unborn"]["provides"] == ["U"]
