"""sources/locked.py: one locked core or node source fetched, placed and checked against its lock's NAR hash
(realize, the probe, the scans and `recheck` all read their sources through it)."""

from __future__ import annotations

import io
import zipfile

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import GitLocked, ZipLocked
from comfyver.sources import gitsource, registry
from comfyver.sources import locked as locked_source

from tests.support.gitserver import make_repo

TAMPERED = "sha256-" + "A" * 43 + "="


@pytest.fixture
def git_locked(tmp_path, git_server) -> GitLocked:
    make_repo(tmp_path / "pack", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "lib/util.py": "X = 1\n"})
    url = git_server.publish(tmp_path / "pack", "pack")
    return gitsource.lock({"type": "git", "url": url, "ref": "main"}, "pack")


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def zip_locked(http_server) -> ZipLocked:
    served = http_server.files_root / "pack.zip"
    served.write_bytes(_zip({"pack-1.0/__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "pack-1.0/requirements.txt": "rich\n"}))
    sri, strip = registry.unpack_and_hash(served, "t")
    return {"type": "zip", "url": f"{http_server.url}/pack.zip", "hash": sri, "stripRoot": strip}


def test_a_git_source_is_placed_without_git_and_checked(tmp_path, git_locked):
    locked_source.place(git_locked, tmp_path / "out", "node pack")
    assert (tmp_path / "out" / "lib" / "util.py").read_text() == "X = 1\n"
    assert not (tmp_path / "out" / ".git").exists()
    locked_source.recheck(git_locked, "node pack")  # the remote still serves it, with the same hash


def test_a_tampered_git_source_is_refused(tmp_path, git_locked):
    bad: GitLocked = {**git_locked, "hash": TAMPERED}
    with pytest.raises(locked_source.HashMismatch, match=r"node pack: NAR hash of the checkout is sha256-\S+, "
                                                          "the lock says sha256-AAA") as e:
        locked_source.place(bad, tmp_path / "out", "node pack")
    assert e.value.got == git_locked["hash"] and e.value.expected == TAMPERED and "re-lock" in (e.value.hint or "")
    with pytest.raises(locked_source.HashMismatch):
        locked_source.recheck(bad, "node pack")


def test_a_zip_source_is_placed_from_the_archive_cache(tmp_path, zip_locked, http_server):
    locked_source.place(zip_locked, tmp_path / "one", "node zipped")
    assert (tmp_path / "one" / "requirements.txt").read_text() == "rich\n"  # the root folder stripped
    assert locked_source.archive_path(zip_locked).is_file()
    locked_source.place(zip_locked, tmp_path / "two", "node zipped", offline=True)  # from the cache alone
    assert len([r for r in http_server.requests if r["path"] == "/pack.zip"]) == 1
    locked_source.recheck(zip_locked, "node zipped")  # downloaded afresh
    assert len([r for r in http_server.requests if r["path"] == "/pack.zip"]) == 2


def test_a_tampered_zip_source_is_refused_and_not_cached(tmp_path, zip_locked, http_server):
    bad: ZipLocked = {**zip_locked, "hash": TAMPERED}
    with pytest.raises(locked_source.HashMismatch, match="node zipped: NAR hash of the checkout is"):
        locked_source.place(bad, tmp_path / "out", "node zipped")
    assert not locked_source.archive_path(bad).exists()  # a wrong archive is not kept for next time
    with pytest.raises(ComfyverError, match="is not cached and --offline was given"):
        locked_source.place(bad, tmp_path / "again", "node zipped", offline=True)
    # the registry changes a published archive: recheck downloads it again and refuses it
    (http_server.files_root / "pack.zip").write_bytes(_zip({"pack-1.0/__init__.py": "import os\n"}))
    with pytest.raises(locked_source.HashMismatch) as e:
        locked_source.recheck(zip_locked, "node zipped")
    assert e.value.expected == zip_locked["hash"] and e.value.got != zip_locked["hash"]
