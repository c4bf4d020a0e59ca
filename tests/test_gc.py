"""`comfyver gc`: leftovers of interrupted runs and unused blobs are listed (dry run) and removed with --yes;
what a version uses, and fresh entries a run may still own, are never touched."""

from __future__ import annotations

import json
import os
import time

from comfyver import cli
from comfyver.base import project
from comfyver.sources import modelstore

from tests.test_realize_helpers import make_project


def age(p, seconds=7200):
    t = time.time() - seconds
    os.utime(p, (t, t), follow_symlinks=False)


def test_gc_lists_then_removes_leftovers_and_unused_blobs(tmp_path, git_server, http_server, capsys):
    proj = make_project(tmp_path, git_server, http_server)
    from comfyver.realize import realize
    realize.realize(proj.root, proj.vid, None)
    store = modelstore.default_store()
    used = {m["locked"]["sha256"] for m in proj.lock["models"].values()}
    realized = project.cache_dir() / "realized"
    old_tree = realized / f".{proj.vid}.old-abc"
    (old_tree / "big").mkdir(parents=True)
    (old_tree / "big" / "f").write_bytes(b"x" * 1000)
    part = store / "sha256" / ("e" * 64 + ".part")
    part.write_bytes(b"half")
    unused = store / "sha256" / ("f" * 64)
    unused.write_bytes(b"nobody locks me")
    fresh = realized / f".{proj.vid}.tmp-now"  # a run may own it right now
    fresh.mkdir()
    envs = project.cache_dir() / "proof-envs"  # a lock killed while making a proof environment, and a made one
    (envs / ".abc.tmp-x" / ".venv").mkdir(parents=True)
    (envs / "abc" / ".venv").mkdir(parents=True)
    for p in (old_tree, part, unused, envs / ".abc.tmp-x", envs / "abc"):
        age(p)
    args = ["--root", str(proj.root), "gc", "--blobs", "--json"]
    assert cli.main(args) == 0
    listed = {i["kind"]: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert set(listed) == {"realize-old", "partial-download", "unused-blob", "proof-env-temp"}
    assert cli.main(args + ["--proof-envs"]) == 0
    assert {i["kind"] for i in json.loads(capsys.readouterr().out)["items"]} == set(listed) | {"proof-env"}
    assert listed["realize-old"]["bytes"] == 1000
    assert old_tree.exists() and part.exists() and unused.exists()  # a dry run
    assert cli.main(args + ["--yes"]) == 0
    assert not old_tree.exists() and not part.exists() and not unused.exists()
    assert not (envs / ".abc.tmp-x").exists() and (envs / "abc").exists()  # made ones only with --proof-envs
    assert fresh.exists()
    assert all((store / "sha256" / sha).is_file() for sha in used)  # what a version locks stays


def test_gc_never_follows_a_link_planted_in_the_store(tmp_path, git_server, http_server):
    """A symlink named like a blob is removed as a link: what it points at keeps its mode and bytes (issue 24 M3)."""
    proj = make_project(tmp_path, git_server, http_server)
    store = modelstore.default_store()
    (store / "sha256").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    os.chmod(secret, 0o600)
    link = store / "sha256" / ("a" * 64)
    link.symlink_to(secret)
    age(link)
    assert cli.main(["--root", str(proj.root), "gc", "--blobs", "--yes", "--json"]) == 0
    assert not os.path.lexists(link)
    assert secret.read_bytes() == b"private"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_gc_keeps_blobs_younger_than_min_age(tmp_path, git_server, http_server, capsys):
    """A blob a running `lock` stored a moment ago is not deleted (issue 24 L2); an old one is."""
    proj = make_project(tmp_path, git_server, http_server)
    store = modelstore.default_store()
    (store / "sha256").mkdir(parents=True)
    fresh, old = store / "sha256" / ("b" * 64), store / "sha256" / ("c" * 64)
    fresh.write_bytes(b"just stored")
    old.write_bytes(b"stored long ago")
    age(old)
    args = ["--root", str(proj.root), "gc", "--blobs", "--yes", "--json"]
    assert cli.main(args) == 0
    assert [i["path"] for i in json.loads(capsys.readouterr().out)["items"]] == [str(old)]
    assert fresh.exists() and not old.exists()
    assert cli.main(args + ["--min-age", "0"]) == 0
    assert not fresh.exists()


def test_gc_keeps_an_old_blob_that_a_running_lock_just_used_again(tmp_path, git_server, http_server, capsys):
    """Outside review of issue 24 (L2 again): a blob stored days ago and adopted or verified again by a running
    `lock`, whose version.json is not written yet, was deleted: its mtime still said 'old'. Using a blob makes it
    young again; the stat cache follows, so nothing is hashed again for it."""
    import hashlib

    from comfyver.realize import gc

    proj = make_project(tmp_path, git_server, http_server)
    store = modelstore.default_store()
    data = b"a model a lock adopts again"
    sha = hashlib.sha256(data).hexdigest()
    blob = modelstore.blob_path(store, sha)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    age(blob, 3 * 86400)
    src = tmp_path / "again.safetensors"
    src.write_bytes(data)
    assert modelstore.adopt(store, src, sha) == blob and not src.exists()
    assert [i.path for i in gc.plan(proj.root, store, blobs=True, min_age=3600)] == []
    age(blob, 3 * 86400)
    cache = modelstore.StatCache(tmp_path / "stat.json")
    modelstore.ensure(store, "checkpoints/m.safetensors", {"url": "https://example.invalid/m", "sha256": sha,
                                                           "size": len(data)}, offline=True, cache=cache)
    assert [i.path for i in gc.plan(proj.root, store, blobs=True, min_age=3600)] == []
    assert cache.lookup(blob, blob.lstat()) == sha  # remembered with the new time: no re-hash next time
