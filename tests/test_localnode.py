"""A pack recorded as it is on disk (`import --from-install --allow-dirty`, sources/localnode.py): the archive holds
exactly the tree Nix would hash, every reason it cannot be taken as it is is named, and nothing outside the folder
is read, even when the folder changes while it is read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.sources import localnode


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "cache"))


def _pack(root: Path) -> Path:
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (root / "sub" / "data.json").write_text("{}")
    for name, mode in (("run.sh", 0o755), ("group_x.sh", 0o654), ("other_x.sh", 0o645)):
        (root / name).write_text("#!/bin/sh\n")
        (root / name).chmod(mode)
    return root


def _nix_hash(path: Path) -> str:
    env = {**os.environ, "NIX_CONFIG": "experimental-features = nix-command flakes"}
    return subprocess.run(["nix", "hash", "path", "--type", "sha256", str(path)], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def test_the_recorded_hash_is_the_one_nix_gives_the_folder(tmp_path):
    """Execute bits as NAR keeps them (the owner's bit only: 0o654 and 0o645 are not executable), empty folders
    kept; git's `.git` (a folder, or a submodule's file) and byte-code left out of the archive."""
    pack = _pack(tmp_path / "pack")
    want = _nix_hash(pack)
    (pack / ".git").mkdir()
    (pack / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (pack / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    (pack / "__pycache__").mkdir()
    (pack / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (pack / "top.pyc").write_bytes(b"\0")
    got = localnode.lock({"type": "local", "path": str(pack)}, "node pack")
    assert got["hash"] == want and got["stripRoot"] is False and got["url"].startswith("file://")
    assert localnode.lock({"type": "local", "path": str(pack)}, "node pack") == got  # the same bytes, the same zip


def test_every_reason_a_pack_cannot_be_taken_as_it_is_is_named(tmp_path, monkeypatch):
    pack = _pack(tmp_path / "pack")
    (pack / "link").symlink_to("/etc/hostname")
    os.mkfifo(pack / "fifo")
    (pack / "a\\b.txt").write_text("x")
    os.close(os.open(bytes(pack) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY))
    (pack / "Case.txt").write_text("x")
    (pack / "case.txt").write_text("y")
    (pack / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):  # a folder this user cannot list (the tests run as root, which lists anything)
        if str(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    _, problems = localnode.scan(pack)
    text = "\n".join(problems)
    for what in ("link: a symbolic link", "fifo: not a regular file", "a\\b.txt: a backslash",
                 "'bad\\udcff.txt': its name is not UTF-8", "one name on a case-insensitive file system",
                 "locked: cannot be read (Permission denied)"):
        assert what in text, (what, text)
    assert len(problems) == 6, problems
    with pytest.raises(ComfyverError, match="6 thing"):
        localnode.lock({"type": "local", "path": str(pack)}, "node pack")
    store = tmp_path / "cache" / "local-nodes"
    assert not store.exists() or not list(store.iterdir())  # a refused pack leaves nothing in the cache


def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(tmp_path, monkeypatch):
    pack = _pack(tmp_path / "pack")
    outside = tmp_path / "outside"
    (outside).mkdir()
    (outside / "data.json").write_text("SECRET")
    real_scan = localnode.scan

    def scan_then_swap(top):
        got = real_scan(top)
        (pack / "__init__.py").unlink()
        (pack / "__init__.py").symlink_to(outside / "data.json")
        return got
    monkeypatch.setattr(localnode, "scan", scan_then_swap)
    with pytest.raises(ComfyverError, match=r"__init__\.py"):
        localnode.lock({"type": "local", "path": str(pack)}, "node pack")

    pack2 = _pack(tmp_path / "pack2")

    def scan_then_swap_folder(top):
        got = real_scan(top)
        os.rename(pack2 / "sub", tmp_path / "moved")
        (pack2 / "sub").symlink_to(outside)  # sub/data.json now leads outside: another file
        return got
    monkeypatch.setattr(localnode, "scan", scan_then_swap_folder)
    with pytest.raises(ComfyverError, match="changed while"):
        localnode.lock({"type": "local", "path": str(pack2)}, "node pack")
    assert not list((tmp_path / "cache" / "local-nodes").glob("*.zip"))
