"""A pack the lock finds is installed as ComfyUI-Manager installs it (`git clone --recursive`): with its git
submodules (lock/submodules.py). ComfyUI_UltimateSDUpscale without its submodule downloads the submodule's script
when ComfyUI imports it (offline, or in an image, the import fails: tests/test_corpus_lock.py's basic-usdu.json)."""

from __future__ import annotations

import json

from comfyver.base import lockfile, nar
from comfyver.lock import nodemap

from tests.support.gitserver import git, make_repo
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)


def _pack_with_submodule(env, tmp_path, sub_url: str) -> str:
    work = tmp_path / "ComfyUI-Sub"
    make_repo(work, {"__init__.py": "class S: pass\nNODE_CLASS_MAPPINGS = {'SubNode': S}\n"}, "pack")
    git("-c", "protocol.file.allow=always", "-c", "protocol.http.allow=always", "submodule", "add", "-q", sub_url,
        "repositories/helper", cwd=work)
    git("commit", "-q", "-m", "the helper as a submodule", cwd=work)
    url = env.git_server.publish(work, "ComfyUI-Sub")
    mgr = __import__("pathlib").Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({url: [["SubNode"], {"title_aux": "Sub"}]}))
    nodemap.manager.cache_clear()
    return url


def _workflow(tmp_path):
    wf = tmp_path / "sub.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SubNode", "mode": 0, "widgets_values": []}], "links": []}))
    return wf


def test_a_pack_with_submodules_is_locked_with_them(env, capsys, tmp_path):
    make_repo(tmp_path / "helper", {"script.py": "VALUE = 1\n"}, "helper")
    sub_url = env.git_server.publish(tmp_path / "helper", "helper")
    _pack_with_submodule(env, tmp_path, sub_url)
    rc, out, err = run(capsys, "lock", "sub", "--workflow", str(_workflow(tmp_path)), "--comfyui-url", env.core,
                       "--comfyui-ref", "v0.3.75", "--offline-registry", "--no-python", "--json")
    assert rc == 0, out + err
    assert any("locked with its git submodules" in n for n in json.loads(out)["notes"])
    node = lockfile.read(env.root / "versions" / "sub" / "version.json")["nodes"]["comfyui-sub"]
    assert node["locked"]["submodules"] is True and "submodules" not in node["original"]
    # the hash is the tree's with the submodule checked out (what fetchgit fetchSubmodules = true gives)
    tree = tmp_path / "check"
    git("-c", "protocol.file.allow=always", "clone", "-q", "--recurse-submodules", node["locked"]["url"], str(tree))
    for g in [tree / ".git", tree / "repositories" / "helper" / ".git"]:
        __import__("shutil").rmtree(g) if g.is_dir() else g.unlink()
    assert (tree / "repositories" / "helper" / "script.py").is_file()
    assert node["locked"]["hash"] == nar.to_sri(nar.nar_hash(tree))


def test_submodules_that_cannot_be_fetched_leave_the_pack_without_them_and_say_so(env, capsys, tmp_path):
    make_repo(tmp_path / "helper", {"script.py": "VALUE = 1\n"}, "helper")
    sub_url = env.git_server.publish(tmp_path / "helper", "helper")
    _pack_with_submodule(env, tmp_path, sub_url)
    __import__("shutil").rmtree(env.git_server.bare("helper"))  # the submodule's repository is gone
    rc, out, err = run(capsys, "lock", "nosub", "--workflow", str(_workflow(tmp_path)), "--comfyui-url", env.core,
                       "--comfyui-ref", "v0.3.75", "--offline-registry", "--no-python", "--json")
    assert rc == 0, out + err
    assert any("has git submodules" in n and "locked without them" in n for n in json.loads(out)["notes"])
    node = lockfile.read(env.root / "versions" / "nosub" / "version.json")["nodes"]["comfyui-sub"]
    assert node["locked"]["submodules"] is False
