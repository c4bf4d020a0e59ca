"""NAR hashing cross-checked against Debian's Nix (nix-hash, nix hash path, nix-store --dump, fetchTree)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from comfyver import cli
from comfyver.base import nar

from tests.support.gitserver import git, make_repo

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def nix_hash_path(path) -> str:
    return subprocess.run([*NIX, "hash", "path", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def nix_hash_legacy(path, *flags) -> str:
    return subprocess.run(["nix-hash", "--type", "sha256", *flags, str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def tricky_tree(tmp_path):
    t = tmp_path / "tree"
    (t / "empty-dir").mkdir(parents=True)
    (t / "sub" / "deeper").mkdir(parents=True)
    (t / "empty-file").write_bytes(b"")
    (t / "sub" / "deeper" / "data.bin").write_bytes(bytes(range(256)) * 1000 + b"x")  # not 8-aligned
    exe = t / "run.sh"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(0o744)  # owner-exec only
    grp = t / "group-exec-only"
    grp.write_text("g")
    grp.chmod(0o654)  # group/other exec must NOT count
    (t / "Name").write_text("upper")
    (t / "name").write_text("lower")
    (t / "naïve-ünïcödé.txt").write_text("é")
    (t / "日本語").mkdir()
    (t / "日本語" / "ファイル").write_text("x")
    os.symlink("sub/deeper/data.bin", t / "link-ok")
    os.symlink("does/not/exist", t / "link-dangling")
    os.symlink("..", t / "sub" / "up")
    return t


def test_tree_matches_nix(tricky_tree):
    mine = nar.to_sri(nar.nar_hash(tricky_tree))
    assert mine == nix_hash_path(tricky_tree)
    assert nar.nar_hash(tricky_tree).hex() == nix_hash_legacy(tricky_tree)
    assert nar.to_base32(nar.nar_hash(tricky_tree)) == nix_hash_legacy(tricky_tree, "--base32")


def test_dump_bytes_equal_nix_store_dump(tricky_tree):
    theirs = subprocess.run(["nix-store", "--dump", str(tricky_tree)], check=True, capture_output=True).stdout
    assert nar.nar_bytes(tricky_tree) == theirs


@pytest.mark.parametrize("kind", ["file", "exec", "empty", "symlink", "dangling", "emptydir"])
def test_single_objects_match_nix(tmp_path, kind):
    p = tmp_path / "obj"
    if kind in ("file", "exec", "empty"):
        p.write_bytes(b"" if kind == "empty" else b"hello\n")
        if kind == "exec":
            p.chmod(0o755)
    elif kind == "symlink":
        (tmp_path / "target").write_text("t")
        os.symlink("target", p)
    elif kind == "dangling":
        os.symlink("/nonexistent/elsewhere", p)
    else:
        p.mkdir()
    assert nar.to_sri(nar.nar_hash(p)) == nix_hash_path(p)


def test_exec_bit_owner_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("same")
    b.write_text("same")
    a.chmod(0o644)
    b.chmod(0o655)  # group+other exec: not executable for NAR
    assert nar.nar_hash(a) == nar.nar_hash(b)
    b.chmod(0o744)
    assert nar.nar_hash(a) != nar.nar_hash(b)


def test_encodings_roundtrip_and_match_nix(tricky_tree):
    d = nar.nar_hash(tricky_tree)
    b32 = nar.to_base32(d)
    assert nar.from_base32(b32) == d
    theirs = subprocess.run(["nix-hash", "--type", "sha256", "--to-base32", d.hex()], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert b32 == theirs
    for form in ("sri", "hex", "base32"):
        assert nar.parse_hash(nar.encode(d, form)) == d
    with pytest.raises(ValueError):
        nar.parse_hash("sha256-tooShort")


def test_cli_hash_forms(tricky_tree, capsys):
    assert cli.main(["hash", str(tricky_tree)]) == 0
    assert capsys.readouterr().out.strip() == nix_hash_path(tricky_tree)
    assert cli.main(["hash", "--base32", str(tricky_tree)]) == 0
    assert capsys.readouterr().out.strip() == nix_hash_legacy(tricky_tree, "--base32")
    f = tricky_tree / "sub" / "deeper" / "data.bin"
    assert cli.main(["hash", "--flat", str(f)]) == 0
    flat = subprocess.run(["nix-hash", "--type", "sha256", "--flat", str(f)], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert capsys.readouterr().out.strip() == flat
    assert cli.main(["hash", "--json", "--flat", "--sri", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hashes"][str(f)] == nar.to_sri(bytes.fromhex(flat))


def test_cli_hash_errors(tmp_path, capsys):
    assert cli.main(["hash", str(tmp_path / "missing")]) == 1
    assert "missing: no such file" in capsys.readouterr().err
    assert cli.main(["hash", "--flat", str(tmp_path)]) == 2


def _repo_with_everything(path):
    make_repo(path, {
        "README.md": "hello\n",
        "bin/tool": "#!/bin/sh\n",
        "deep/a/b/c.txt": "c",
        "Case": "1", "case": "2",
        "ünï.txt": "u",
        "empty": "",
    })
    (path / "bin" / "tool").chmod(0o755)
    os.symlink("deep/a/b/c.txt", path / "link")
    os.symlink("nowhere", path / "dangling")
    git("add", "-A", cwd=path)
    git("commit", "-qm", "more", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


def test_git_objects_hash_equals_checkout_and_fetchTree(tmp_path):
    repo = tmp_path / "repo"
    rev = _repo_with_everything(repo)
    fast = nar.to_sri(nar.git_tree_nar_hash(str(repo), rev))
    # the same tree written out by git, .git removed
    co = tmp_path / "co"
    git("clone", "-q", str(repo), str(co))
    subprocess.run(["rm", "-rf", str(co / ".git")], check=True)
    assert fast == nar.to_sri(nar.nar_hash(co)) == nix_hash_path(co)
    # and what Nix's own git fetcher computes as narHash
    expr = f'(builtins.fetchTree {{ type = "git"; url = "file://{repo}"; rev = "{rev}"; }}).narHash'
    out = subprocess.run([*NIX, "eval", "--raw", "--impure", "--expr", expr], check=True, capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)}).stdout.strip()
    assert out == fast


def test_exclude_equals_hash_of_tree_without_those_paths(tricky_tree, tmp_path):
    import shutil

    full = nar.nar_hash(tricky_tree, exclude=["sub/deeper", "Name", "日本語/ファイル"])
    copy = tmp_path / "copy"
    shutil.copytree(tricky_tree, copy, symlinks=True)
    shutil.rmtree(copy / "sub" / "deeper")
    (copy / "Name").unlink()
    (copy / "日本語" / "ファイル").unlink()
    assert full == nar.nar_hash(copy)
    assert nar.to_sri(full) == nix_hash_path(copy)
