"""The stand-in nixpkgs is strict: an argument the real nixpkgs function does not take fails here too. (uv2nix,
pyproject.nix and build-system-pkgs are the real ones: tests/nix/harness.py seeds them.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.nix import harness as h

_PKGS: list[str] = []


def pkgs_dir() -> str:
    if not _PKGS:
        _PKGS.append(h.stand_ins(h.workdir())[-1].removeprefix("path:"))
    return _PKGS[0]


def evaluate(body: str):
    d = pkgs_dir()
    expr = f"""
let
  lib = import {d}/lib;
  pkgs = import {d}/pkgs.nix {{ inherit lib; system = "x86_64-linux"; host = builtins.fromJSON (builtins.readFile {d}/host.json); }};
  H = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
in
"""  # noqa: E501 - Nix text
    return h.nix("eval", "--impure", "--raw", "--expr", expr + body, check=False)


@pytest.mark.parametrize("call,unexpected", [
    ('pkgs.fetchgit { url = "file:///x"; rev = "HEAD"; hash = H; fetchSubmodule = false; }', "fetchSubmodule"),
    ('pkgs.fetchurl { url = "file:///x"; sha256 = H; netrcEnvVars = [ ]; }', "netrcEnvVars"),
    ('pkgs.fetchzip { url = "file:///x.zip"; hash = H; stripRoots = true; }', "stripRoots"),
    ('pkgs.dockerTools.buildLayeredImage { name = "x"; maxLayer = 10; }', "maxLayer"),
])
def test_unknown_argument_fails_like_the_real_function(call, unexpected):
    p = evaluate(f"({call}).drvPath or \"\"")
    assert p.returncode == 1
    assert f"unexpected argument '{unexpected}'" in p.stderr, p.stderr


@pytest.mark.parametrize("call", [
    'pkgs.fetchgit { url = "file:///x"; rev = "0123456789012345678901234567890123456789"; hash = H; fetchSubmodules = false;'
    ' name = "n-source"; }',
    'pkgs.fetchurl { url = "file:///x"; name = "m"; sha256 = "0000000000000000000000000000000000000000000000000000000000000000";'
    ' netrcPhase = ""; netrcImpureEnvVars = [ "HF_TOKEN" ]; }',
    'pkgs.fetchzip { url = "file:///x.zip"; hash = H; stripRoot = false; extension = "zip"; name = "z"; }',
    'pkgs.dockerTools.buildLayeredImage { name = "x"; tag = null; contents = [ ]; config = { }; maxLayers = 100;'
    ' extraCommands = ""; fakeRootCommands = ""; }',
])
def test_the_arguments_comfyver_uses_are_accepted(call):
    p = evaluate(f"({call}).drvPath")
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith(".drv")


def test_fetchzip_rest_arguments_are_checked_against_fetchurl():
    p = evaluate('(pkgs.fetchzip { url = "file:///x.zip"; hash = H; curlOptz = ""; }).drvPath')
    assert p.returncode == 1 and "unexpected argument 'curlOptz'" in p.stderr


def test_the_fod_hash_is_the_argument_as_given():
    p = evaluate('(pkgs.fetchurl { url = "file:///x"; sha256 = "ab"; }).drvPath')
    # Nix itself rejects a malformed fixed-output hash when the derivation is instantiated
    assert p.returncode == 1 and "hash 'ab' has wrong length" in p.stderr, p.stderr


def test_delete_if_dead_frees_a_dead_closure_and_keeps_what_a_root_or_a_live_path_holds(tmp_path):
    """The harness frees GBs mid-run (wheels, image archives, a module's builds); it must never break the store,
    and a path already gone or one still alive must not stop it freeing the rest."""
    nonce = os.urandom(8).hex()
    (tmp_path / "t.nix").write_text(f"""
      let mk = name: text: derivation {{ inherit name; system = builtins.currentSystem; builder = "/bin/sh";
                                         args = [ "-c" "echo '${{text}}' > $out" ]; }};
      in rec {{ a = mk "del-a" "{nonce}"; b = mk "del-b" "${{a}}"; c = mk "del-c" "{nonce}c"; d = mk "del-d" "${{c}}";
               e = mk "del-e" "{nonce}e"; f = mk "del-f" "${{e}}"; g = mk "del-g" "${{b}}"; }}""")

    def build(attr, *link):
        out = subprocess.run(["nix-build", str(tmp_path / "t.nix"), "-A", attr, *(link or ["--no-out-link"])],
                             env=h.nix_env(), capture_output=True, text=True, check=True).stdout.split()
        return Path(out[-1])
    a, b, c, e, f, g = (build(x) for x in "abcefg")
    root = tmp_path / "root-d"
    d = build("d", "--out-link", str(root))  # d is rooted, so c (which d refers to) is alive
    try:
        h.delete_if_dead(a, g, closure=False)  # the paths alone: g goes, a stays (b refers to it)
        assert not g.exists() and a.exists() and b.exists()
        h.delete_if_dead(e)  # and f, the dead path that refers to it (an image's layers.json refers to the env)
        assert not e.exists() and not f.exists()
        h.delete_if_dead(f, c, b)  # f already gone, c alive (d's root), b dead with a
        assert not a.exists() and not b.exists()
        assert c.exists() and d.exists()
        assert subprocess.run(["nix-store", "--verify-path", str(d)], env=h.nix_env()).returncode == 0
    finally:
        root.unlink()
        h.delete_if_dead(d)
    assert not c.exists() and not d.exists()


@pytest.mark.parametrize("flattened", [True, False])
def test_the_harness_accepts_shared_inputs_with_the_real_symlink_or_a_flattened_one(tmp_path, flattened):
    """../shared's pyproject.nix copy flattened doc/src/reference-std.md (a file holding the link's target); a
    fixed copy keeps the real link. Both become the same tree (the narHash check in seed_real_inputs proves it)."""
    tree = tmp_path / "source"
    (tree / "doc/src").mkdir(parents=True)
    (tree / "doc/lib.md").write_text("the real text\n")
    link = tree / "doc/src/reference-std.md"
    if flattened:
        link.write_text("../lib.md")
    else:
        link.symlink_to("../lib.md")
    h.restore_symlinks(tree, ["doc/src/reference-std.md"])
    assert link.is_symlink() and os.readlink(link) == "../lib.md" and link.read_text() == "the real text\n"
