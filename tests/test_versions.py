"""Version operations through the CLI, against local git and HTTP servers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import lockfile

from tests.support.gitserver import git, make_repo


@pytest.fixture
def project(tmp_path, git_server, http_server, monkeypatch):
    root = tmp_path / "proj"
    (root / "versions").mkdir(parents=True)
    (root / "flake.nix").write_text("{}\n")
    core = tmp_path / "core"
    make_repo(core, {"main.py": "print('comfy')\n", "nodes.py": "NODE_CLASS_MAPPINGS = {}\n"}, "c1", tag="v0.3.75")
    make_repo(core, {"main.py": "print('comfy 2')\n"}, "c2", tag="v0.3.76")
    pack = tmp_path / "pack"
    make_repo(pack, {"__init__.py": "NODE_CLASS_MAPPINGS = {'X': object}\n"}, "p1", tag="v1.0.0")
    model = b"model-bytes" * 100
    (http_server.files_root / "m.safetensors").write_bytes(model)
    ns = type("P", (), {})()
    ns.root, ns.core_work, ns.pack_work = root, core, pack
    ns.core = git_server.publish(core, "ComfyUI")
    ns.pack = git_server.publish(pack, "ComfyUI-Pack")
    ns.model_url = f"{http_server.url}/m.safetensors"
    ns.model_sha = hashlib.sha256(model).hexdigest()
    ns.git_server = git_server
    monkeypatch.chdir(root)
    return ns


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_full_version_lifecycle(project, capsys):
    p = project
    rc, out, _ = run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core, "--json")
    assert rc == 0
    lock = json.loads(out)
    assert lock["comfyui"]["locked"]["ref"] == "refs/tags/v0.3.75"
    assert run(capsys, "add-node", "demo", f"{p.pack}@v1.0.0")[0] == 0
    assert run(capsys, "add-model", "demo", "checkpoints/sd/m.safetensors", p.model_url)[0] == 0
    data = lockfile.read(p.root / "versions" / "demo" / "version.json")
    assert list(data["nodes"]) == ["comfyui-pack"]
    assert data["models"]["checkpoints/sd/m.safetensors"]["locked"]["sha256"] == p.model_sha

    rc, out, _ = run(capsys, "list", "--json")
    assert rc == 0 and json.loads(out)[0] | {"model_bytes": 0} == {
        "id": "demo", "comfyui": data["comfyui"]["locked"]["rev"], "comfyui_ref": "refs/tags/v0.3.75",
        "nodes": 1, "models": 1, "workflows": 0, "model_bytes": 0}
    rc, out, _ = run(capsys, "show", "demo")
    assert rc == 0 and "comfyui-pack" in out and "checkpoints/sd/m.safetensors" in out

    assert run(capsys, "clone", "demo", "demo-next")[0] == 0
    assert run(capsys, "update", "demo-next", "comfyui", "--json")[0] == 0  # ref is a tag: unchanged
    # move the ask to the next release and re-resolve
    nxt = lockfile.read(p.root / "versions" / "demo-next" / "version.json")
    nxt["comfyui"]["original"]["ref"] = "latest"
    lockfile.write(p.root / "versions" / "demo-next" / "version.json", nxt)
    rc, out, _ = run(capsys, "update", "demo-next", "--json")
    changed = json.loads(out)["changed"]
    assert rc == 0 and list(changed) == ["comfyui"]
    assert run(capsys, "add-node", "demo-next", "https://example.invalid/x.git@main", "--name", "comfyui")[0] == 2

    rc, out, _ = run(capsys, "diff", "demo", "demo-next", "--json")
    d = json.loads(out)
    assert d["comfyui"]["from"] == data["comfyui"]["locked"]["rev"] and d["nodes"]["added"] == []
    rc, out, _ = run(capsys, "diff", "demo", "demo-next")
    assert "comfyui" in out

    assert run(capsys, "recheck", "demo")[0] == 0
    assert run(capsys, "delete", "demo-next", "--yes")[0] == 0
    assert not (p.root / "versions" / "demo-next").exists()
    assert run(capsys, "show", "demo-next")[0] == 1


def test_recheck_finds_wrong_hash_changed_model_and_deleted_commit(project, capsys, tmp_path, monkeypatch, http_server):
    p = project
    run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    run(capsys, "add-node", "demo", f"{p.pack}@main")
    run(capsys, "add-model", "demo", "vae/m.safetensors", p.model_url)
    path = p.root / "versions" / "demo" / "version.json"
    data = lockfile.read(path)
    data["comfyui"]["locked"]["hash"] = "sha256-" + "A" * 43 + "="
    lockfile.write(path, data)
    (http_server.files_root / "m.safetensors").write_bytes(b"changed upstream")
    # the pack's branch is force-pushed past the locked commit, and the server is gc'd
    git("reset", "-q", "--hard", "HEAD", cwd=p.pack_work)
    git("commit", "-q", "--amend", "-m", "rewritten", cwd=p.pack_work)
    git("tag", "-d", "v1.0.0", cwd=p.pack_work)
    p.git_server.publish(p.pack_work, "ComfyUI-Pack")
    bare = p.git_server.bare("ComfyUI-Pack")
    git("reflog", "expire", "--expire=now", "--all", cwd=bare)
    git("gc", "-q", "--prune=now", cwd=bare)
    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "new-machine"))
    rc, out, _ = run(capsys, "recheck", "demo", "--json")
    problems = json.loads(out)["problems"]
    assert rc == 1
    assert set(problems) == {"comfyui", "comfyui-pack", "vae/m.safetensors"}
    assert "hash mismatch" in problems["comfyui"]
    assert "no longer reachable" in problems["comfyui-pack"]
    assert "mismatch" in problems["vae/m.safetensors"]


def test_errors_name_their_input(project, capsys):
    p = project
    rc, _, err = run(capsys, "new", "Bad/Id")
    assert rc == 2 and "invalid version id 'Bad/Id'" in err
    rc, _, err = run(capsys, "add-node", "nothere", f"{p.pack}@main")
    assert rc == 1 and "nothere" in err and "no such version lock" in err
    run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    rc, _, err = run(capsys, "add-node", "demo", f"{p.pack}@--upload-pack=x")
    assert rc == 2 and "not a valid git ref" in err
    rc, _, err = run(capsys, "add-model", "demo", "../escape.bin", p.model_url)
    assert rc == 2 and "inside models/" in err
    rc, _, err = run(capsys, "add-model", "demo", "loras/x.bin", "ftp://host/x.bin")
    assert rc == 2 and "ftp://" in err
    rc, _, err = run(capsys, "update", "demo", "no-such-input")
    assert rc == 2 and "no-such-input" in err
    # a URL the lock cannot hold is the argument's fault, named as the argument, not blamed on version.json
    rc, _, err = run(capsys, "add-model", "demo", "loras/t.bin", p.model_url + "?token=hf_SECRET999")
    assert rc == 2 and "add-model loras/t.bin: source" in err and "version.json" not in err
    assert "hf_SECRET999" not in err
    rc, out, err = run(capsys, "add-node", "demo", "http://127.0.0.1:9/gone.git@main", "--json")
    assert rc == 1 and "nodes.gone" in err and json.loads(out)["error"]
    # nothing half-written: the lock still validates and has no node
    assert lockfile.read(p.root / "versions" / "demo" / "version.json")["nodes"] == {}


def test_token_never_reaches_lock_or_output(project, capsys, http_server, monkeypatch):
    p = project
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_TopSecret_42")
    http_server.routes["/api/models/org/gated/revision/main"] = lambda h, b: (403, {}, {"error": "gated"})
    run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    rc, out, err = run(capsys, "add-model", "demo", "loras/x.safetensors", "hf://org/gated/x.safetensors", "--json")
    assert rc == 1 and "HF_TOKEN" in err
    assert "hf_TopSecret_42" not in out + err
    assert "hf_TopSecret_42" not in (p.root / "versions" / "demo" / "version.json").read_text()
    assert any(r["headers"].get("Authorization") == "Bearer hf_TopSecret_42" for r in http_server.requests)


def test_diff_reports_nodes_moved_models_and_python_packages(project, capsys, tmp_path, git_server):
    p = project
    run(capsys, "new", "a", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    run(capsys, "add-node", "a", f"{p.pack}@v1.0.0")
    run(capsys, "add-model", "a", "vae/m.safetensors", p.model_url)
    run(capsys, "clone", "a", "b")
    fork = tmp_path / "fork"
    make_repo(fork, {"__init__.py": "NODE_CLASS_MAPPINGS = {'X': object, 'Y': object}\n"}, "fork")
    fork_url = git_server.publish(fork, "ComfyUI-Pack-Fork")
    run(capsys, "add-node", "b", f"{fork_url}@main", "--name", "comfyui-pack", "--replace")
    run(capsys, "add-node", "b", f"{p.pack}@v1.0.0", "--name", "second")
    lock_a = '[[package]]\nname = "numpy"\nversion = "2.1.0"\n\n[[package]]\nname = "einops"\nversion = "0.8.0"\n'
    lock_b = '[[package]]\nname = "numpy"\nversion = "2.2.0"\n\n[[package]]\nname = "kornia"\nversion = "0.7.1"\n'
    (p.root / "versions" / "a" / "uv.lock").write_text("version = 1\n" + lock_a)
    (p.root / "versions" / "b" / "uv.lock").write_text("version = 1\n" + lock_b)
    rc, out, _ = run(capsys, "diff", "a", "b", "--json")
    d = json.loads(out)
    assert rc == 0 and d["comfyui"] == {}
    assert d["nodes"]["added"] == ["second"] and d["nodes"]["removed"] == []
    assert d["nodes"]["moved"] == {"comfyui-pack": {"from": p.pack, "to": fork_url}}
    assert list(d["nodes"]["changed"]) == ["comfyui-pack"]
    assert d["models"] == {"added": [], "removed": [], "changed": {}}
    assert d["python"]["added"] == ["kornia"] and d["python"]["removed"] == ["einops"]
    assert d["python"]["changed"] == {"numpy": {"from": "2.1.0", "to": "2.2.0"}}
    rc, out, _ = run(capsys, "diff", "a", "b")
    assert "moved" in out and "kornia" in out and "2.1.0 -> 2.2.0" in out


def test_concurrent_writers_lose_no_update(project, capsys, http_server):
    """Two `add-model` processes on one version at once: both changes land (one writer at a time)."""
    import os
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    from comfyver.lock import versions
    from filelock import FileLock

    p = project
    assert run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)[0] == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "scripts")}
    cmd = [sys.executable, "-m", "comfyver", "--root", str(p.root), "add-model", "demo"]
    # hold the lock so both start while it is taken; both must wait, then both apply
    held = FileLock(str(versions.writer_lock_path(p.root, "demo")))
    held.acquire()
    procs = [subprocess.Popen(cmd + [f"loras/m{i}.safetensors", p.model_url], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda pr=pr, out=out: out.extend(pr.stderr), daemon=True)
               for pr, out in zip(procs, errs)]
    for t in readers:
        t.start()
    try:
        nowait = subprocess.run([sys.executable, "-m", "comfyver", "--root", str(p.root), "--no-wait", "add-model",
                                 "demo", "loras/late.safetensors", p.model_url], env=env, capture_output=True,
                                text=True, timeout=120)
        assert nowait.returncode == 1 and "another comfyver is changing it" in nowait.stderr
        # release only once both writers are waiting for the lock (a loaded machine starts them slowly)
        deadline = time.monotonic() + 120
        while not all(any("waiting for another comfyver" in line for line in e) for e in errs):
            assert time.monotonic() < deadline, errs
            time.sleep(0.05)
    finally:
        held.release()
    for pr in procs:
        pr.wait(timeout=120)
    for t in readers:
        t.join(timeout=10)
    assert [pr.returncode for pr in procs] == [0, 0], errs
    lock = lockfile.read(p.root / "versions" / "demo" / "version.json")
    assert {"loras/m0.safetensors", "loras/m1.safetensors"} <= set(lock["models"])
    assert "loras/late.safetensors" not in lock["models"]


def test_recheck_asks_the_remote_not_the_cache(project, capsys):
    """The cache still holds every pin, but the upstream repository is gone: recheck says so."""
    import shutil

    p = project
    run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    run(capsys, "add-node", "demo", f"{p.pack}@main")
    assert run(capsys, "recheck", "demo")[0] == 0
    shutil.rmtree(p.git_server.bare("ComfyUI-Pack"))
    rc, out, _ = run(capsys, "recheck", "demo", "--json")
    problems = json.loads(out)["problems"]
    assert rc == 1 and set(problems) == {"comfyui-pack"}
    assert "cannot be reached any more" in problems["comfyui-pack"]


def test_clone_rewrites_what_carries_the_id(tmp_path, monkeypatch):
    """The bundled example's real pyproject.toml and uv.lock name the project after the id: a clone's must name
    the clone, and its uv.lock must still hold that project (what `check` reads)."""
    import shutil as sh

    from comfyver.lock import pylock, versions

    src = Path(__file__).resolve().parents[1] / "versions" / "example"
    root = tmp_path / "proj"
    sh.copytree(src, root / "versions" / "example")
    (root / "pyproject.toml").write_text("[project]\nname='p'\n")
    versions.clone(root, "example", "example-2")
    vdir = root / "versions" / "example-2"
    name, requires = pylock.project_requires((vdir / "pyproject.toml").read_text())
    assert name == "comfyver-version"
    assert pylock.locked_requires((vdir / "uv.lock").read_text(), name) == requires
    assert "comfyver-version-example" not in (vdir / "uv.lock").read_text()
    assert lockfile.read(vdir / "version.json")["id"] == "example-2"


def test_lock_with_nothing_new_relocks_the_versions_own_inputs(project, capsys):
    """`new` + `add-node` gives a version whose hint says `comfyver lock <id>`: that command works."""
    p = project
    run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", p.core)
    run(capsys, "add-node", "demo", f"{p.pack}@main")
    rc, out, err = run(capsys, "lock", "demo", "--no-python", "--json")
    assert rc == 0, out + err
    assert json.loads(out)["nodes"] == ["comfyui-pack"]
    rc, _, err = run(capsys, "lock", "never-made")
    assert rc == 2 and "does not exist yet" in err


def _leaf_parsers(parser, prefix=()):
    """(verb words, parser) for every command the parser runs: `models sync` and the like, not `models`."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for a in subs:
        for name, p in a.choices.items():
            yield from _leaf_parsers(p, (*prefix, name))


def test_every_verb_takes_json():
    """README: every verb prints one JSON object with `--json`."""
    verbs = dict(_leaf_parsers(cli.build_parser()))
    assert {("clone",), ("delete",), ("export",), ("models", "sync"), ("list",)} <= set(verbs)
    missing = [" ".join(v) for v, p in verbs.items() if "--json" not in p._option_string_actions]
    assert missing == []


def test_clone_and_delete_say_what_they_did_in_json(tmp_path, monkeypatch):
    import io
    import shutil as sh

    root = tmp_path / "proj"
    sh.copytree(Path(__file__).resolve().parents[1] / "versions" / "example", root / "versions" / "example")

    def run_json(*args, stdin="") -> tuple[int, object, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        monkeypatch.setattr("sys.stderr", err)
        monkeypatch.setattr("sys.stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})(stdin))
        rc = cli.main(["--root", str(root), *args, "--json"])
        monkeypatch.undo()
        return rc, json.loads(out.getvalue()), err.getvalue()

    rc, d, _ = run_json("clone", "example", "example-2")
    assert rc == 0 and d["from"] == "example" and d["id"] == "example-2"
    assert {k: v for k, v in d.items() if k != "from"} == lockfile.read(root / "versions/example-2/version.json")
    rc, d, _ = run_json("clone", "example", "example-2")
    assert rc == 2 and "already exists" in d["error"]
    # asked on a terminal and refused: nothing removed, the question on stderr, stdout still one JSON object
    rc, d, err = run_json("delete", "example-2", stdin="n\n")
    assert (rc, d) == (1, {"id": "example-2", "deleted": False}) and "delete versions/example-2?" in err
    assert (root / "versions/example-2/version.json").is_file()
    rc, d, _ = run_json("delete", "example-2", stdin="y\n")
    assert (rc, d) == (0, {"id": "example-2", "deleted": True}) and not (root / "versions/example-2").exists()
    rc, d, _ = run_json("delete", "example-2", "--yes")
    assert rc == 1 and "no version 'example-2'" in d["error"]
