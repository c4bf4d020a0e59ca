"""Git resolver against real smart-HTTP git (`git http-backend`) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from comfyver.base import nar
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.sources import gitsource, resolve

from tests.support.gitserver import git, make_repo

NIX = ["nix", "--extra-experimental-features", "nix-command"]


@pytest.fixture
def upstream(tmp_path, git_server):
    work = tmp_path / "work"
    revs = {}
    revs["v1.0.0"] = make_repo(work, {"nodes.py": "A = 1\n"}, "one", tag="v1.0.0")
    revs["v1.2.0"] = make_repo(work, {"nodes.py": "A = 2\n", "run.sh": "#!/bin/sh\n"}, "two", tag="v1.2.0")
    revs["rc"] = make_repo(work, {"nodes.py": "A = 3\n"}, "three", tag="v2.0.0-rc1")
    git("branch", "dev", revs["v1.0.0"], cwd=work)
    revs["main"] = make_repo(work, {"extra.txt": "e"}, "four")
    url = git_server.publish(work, "nodepack")
    return url, work, revs


def nix_hash_of_checkout(tmp_path, url, rev) -> str:
    co = tmp_path / f"co-{rev[:8]}"
    git("clone", "-q", url, str(co))
    git("checkout", "-q", rev, cwd=co)
    shutil.rmtree(co / ".git")
    return subprocess.run([*NIX, "hash", "path", str(co)], check=True, capture_output=True, text=True).stdout.strip()


def test_refs_resolve(upstream):
    url, _work, revs = upstream
    assert gitsource.resolve_ref(url, "latest", "t").rev == revs["v1.2.0"]  # rc is not a release
    assert gitsource.resolve_ref(url, "latest", "t").ref == "refs/tags/v1.2.0"
    assert gitsource.resolve_ref(url, "nightly", "t").rev == revs["main"]
    assert gitsource.resolve_ref(url, "v1.0.0", "t").rev == revs["v1.0.0"]
    assert gitsource.resolve_ref(url, "dev", "t").rev == revs["v1.0.0"]
    assert gitsource.resolve_ref(url, revs["v1.2.0"], "t").rev == revs["v1.2.0"]
    assert gitsource.resolve_ref(url, revs["v1.2.0"][:9], "t").rev == revs["v1.2.0"]
    with pytest.raises(ComfyverError, match="ref 'nope' not found"):
        gitsource.resolve_ref(url, "nope", "t")


def test_latest_without_tags_is_default_branch(tmp_path, git_server):
    rev = make_repo(tmp_path / "w", {"a": "1"})
    url = git_server.publish(tmp_path / "w", "untagged")
    assert gitsource.resolve_ref(url, "latest", "t").rev == rev


def test_lock_hash_is_what_nix_computes(tmp_path, upstream):
    url, _work, revs = upstream
    locked = gitsource.lock({"type": "git", "url": url, "ref": "latest"}, "nodes.pack")
    assert locked == {"type": "git", "url": url, "rev": revs["v1.2.0"], "ref": "refs/tags/v1.2.0",
                      "hash": nix_hash_of_checkout(tmp_path, url, revs["v1.2.0"]), "submodules": False}


def test_warm_relock_fetches_nothing(upstream, git_server):
    url, _, _ = upstream
    gitsource.lock({"type": "git", "url": url, "ref": "v1.0.0"}, "t")
    git_server.requests.clear()
    gitsource.lock({"type": "git", "url": url, "ref": "v1.0.0"}, "t")
    # only ref advertisement (ls-remote); no pack was requested
    assert git_server.requests and all("git-upload-pack" not in p or m == "GET" for m, p in git_server.requests[:1])
    assert not any(m == "POST" and "fetch" in p for m, p in git_server.requests)
    posts = [p for m, p in git_server.requests if m == "POST"]
    assert len(posts) <= 1  # the protocol-v2 ls-refs command, nothing more


def test_moved_tag_is_reported_by_update(tmp_path, upstream, git_server):
    url, work, revs = upstream
    before = gitsource.lock({"type": "git", "url": url, "ref": "v1.0.0"}, "t")
    git("tag", "-f", "v1.0.0", revs["main"], cwd=work)
    git_server.publish(work, "nodepack")
    after = gitsource.lock({"type": "git", "url": url, "ref": "v1.0.0"}, "t")
    assert before["rev"] == revs["v1.0.0"] and after["rev"] == revs["main"]
    assert before["hash"] != after["hash"]
    # the old pin is still fetchable by rev and still hashes the same
    repo = gitsource.fetch(url, before["rev"], "t")
    assert gitsource.nar_hash_rev(repo, before["rev"], url, False, "t") == before["hash"]


def test_force_pushed_branch_and_deleted_commit(tmp_path, upstream, git_server, monkeypatch):
    url, work, revs = upstream
    git("checkout", "-q", "dev", cwd=work)
    doomed = make_repo(work, {"doomed.txt": "x"}, "doomed")
    git_server.publish(work, "nodepack")
    locked = gitsource.lock({"type": "git", "url": url, "ref": "dev"}, "nodes.pack")
    assert locked["rev"] == doomed
    git("reset", "-q", "--hard", revs["v1.0.0"], cwd=work)
    make_repo(work, {"other.txt": "y"}, "rewritten")
    git_server.publish(work, "nodepack")
    bare = git_server.bare("nodepack")
    git("reflog", "expire", "--expire=now", "--all", cwd=bare)
    git("gc", "-q", "--prune=now", cwd=bare)
    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "fresh-cache"))  # a new machine
    with pytest.raises(ComfyverError) as e:
        gitsource.fetch(url, doomed, "nodes.pack")
    assert "nodes.pack" in str(e.value) and doomed in str(e.value) and "no longer reachable" in str(e.value)
    assert "comfyver update" in str(e.value)


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/comfyver-pwned", "-c", "HEAD@{1}", "main..dev", "a b"])
def test_option_like_refs_refused(upstream, ref):
    url, _, _ = upstream
    with pytest.raises(UsageError, match="not a valid git ref"):
        gitsource.lock({"type": "git", "url": url, "ref": ref}, "nodes.evil")
    assert not os.path.exists("/tmp/comfyver-pwned")


@pytest.mark.parametrize("url", ["--upload-pack=touch /tmp/comfyver-pwned", "-oProxyCommand=touch /tmp/comfyver-pwned",
                                 "ext::sh -c touch% /tmp/comfyver-pwned", "fd::3", "/local/path", "ftp://x/y.git"])
def test_option_like_or_odd_urls_refused(url):
    with pytest.raises(UsageError):
        gitsource.lock({"type": "git", "url": url, "ref": "main"}, "nodes.evil")
    assert not os.path.exists("/tmp/comfyver-pwned")


def test_unreachable_host_is_a_clear_error():
    url = "http://127.0.0.1:9/nothing.git"
    with pytest.raises(ComfyverError) as e:
        gitsource.lock({"type": "git", "url": url, "ref": "main"}, "nodes.gone")
    assert "nodes.gone" in str(e.value) and "git ls-remote failed" in str(e.value)


def test_submodules_hash_matches_recursive_checkout(tmp_path, git_server):
    sub_rev = make_repo(tmp_path / "sub", {"lib.py": "X = 1\n"})
    sub_url = git_server.publish(tmp_path / "sub", "sublib")
    main = tmp_path / "main"
    make_repo(main, {"__init__.py": ""})
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", sub_url, "vendor/lib", cwd=main)
    git("commit", "-qm", "add submodule", cwd=main)
    url = git_server.publish(main, "withsub")
    locked = gitsource.lock({"type": "git", "url": url, "ref": "main", "submodules": True}, "t")
    co = tmp_path / "co"
    git("clone", "-q", "--recursive", url, str(co))
    for d, dirs, files in os.walk(co):
        if ".git" in dirs:
            shutil.rmtree(os.path.join(d, ".git"))
            dirs.remove(".git")
        if ".git" in files:
            os.unlink(os.path.join(d, ".git"))
    assert (co / "vendor" / "lib" / "lib.py").exists()
    assert locked["hash"] == nar.to_sri(nar.nar_hash(co))
    assert locked["submodules"] is True
    # without submodules the gitlink is an empty folder, as in a plain checkout
    plain = gitsource.lock({"type": "git", "url": url, "ref": "main"}, "t")
    assert plain["hash"] != locked["hash"]
    assert sub_rev


def test_checkout_transforming_attributes_use_a_real_checkout(tmp_path, git_server):
    work = tmp_path / "crlf"
    make_repo(work, {".gitattributes": "*.txt eol=crlf\n", "a.txt": "line1\nline2\n"})
    url = git_server.publish(work, "crlf")
    locked = gitsource.lock({"type": "git", "url": url, "ref": "main"}, "t")
    assert locked["hash"] == nix_hash_of_checkout(tmp_path, url, locked["rev"])


def test_pool_reports_every_failure(upstream):
    url, _, _ = upstream
    items = [resolve.Item("nodes.ok", "git", {"type": "git", "url": url, "ref": "v1.0.0"}),
             resolve.Item("nodes.bad-ref", "git", {"type": "git", "url": url, "ref": "nope"}),
             resolve.Item("nodes.down", "git", {"type": "git", "url": "http://127.0.0.1:9/x.git", "ref": "main"})]
    with pytest.raises(resolve.ResolveFailed) as e:
        resolve.lock_items(items, jobs=3, progress=False)
    assert set(e.value.failures) == {"nodes.bad-ref", "nodes.down"}
