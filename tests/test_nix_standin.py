"""The stand-ins are strict: an argument the real nixpkgs/uv2nix function does not take fails here too."""

from __future__ import annotations

import pytest

from tests.nix import harness as h

PKGS = f"""
let
  lib = import {h.STAND_IN}/nixpkgs/lib.nix;
  pkgs = import {h.STAND_IN}/nixpkgs/pkgs.nix {{ inherit lib; system = "x86_64-linux"; hostPython = "/usr/bin/python3"; }};
  uv2nix = import {h.STAND_IN}/uv2nix/workspace.nix {{ inherit lib; }};
  ws = uv2nix.loadWorkspace {{ workspaceRoot = {h.FIXTURES}/python-cuda; }};
  H = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
in
"""


def evaluate(body: str):
    return h.nix("eval", "--impure", "--raw", "--expr", PKGS + body, check=False)


@pytest.mark.parametrize("call,unexpected", [
    ('pkgs.fetchgit { url = "file:///x"; rev = "HEAD"; hash = H; fetchSubmodule = false; }', "fetchSubmodule"),
    ('pkgs.fetchurl { url = "file:///x"; sha256 = H; netrcEnvVars = [ ]; }', "netrcEnvVars"),
    ('pkgs.fetchzip { url = "file:///x.zip"; hash = H; stripRoots = true; }', "stripRoots"),
    ('pkgs.dockerTools.buildLayeredImage { name = "x"; maxLayer = 10; }', "maxLayer"),
    ('uv2nix.loadWorkspace { workspaceRoot = ./.; root = ./.; }', "root"),
    ('ws.mkPyprojectOverlay { sourcePreferences = "wheel"; }', "sourcePreferences"),
])
def test_unknown_argument_fails_like_the_real_function(call, unexpected):
    p = evaluate(f"({call}).drvPath or \"\"")
    assert p.returncode == 1
    assert f"unexpected argument '{unexpected}'" in p.stderr, p.stderr


@pytest.mark.parametrize("call", [
    'pkgs.fetchgit { url = "file:///x"; rev = "0123456789012345678901234567890123456789"; hash = H; fetchSubmodules = false; name = "n-source"; }',
    'pkgs.fetchurl { url = "file:///x"; name = "m"; sha256 = "0000000000000000000000000000000000000000000000000000000000000000"; netrcPhase = ""; netrcImpureEnvVars = [ "HF_TOKEN" ]; }',
    'pkgs.fetchzip { url = "file:///x.zip"; hash = H; stripRoot = false; extension = "zip"; name = "z"; }',
    'pkgs.dockerTools.buildLayeredImage { name = "x"; tag = null; contents = [ ]; config = { }; maxLayers = 100; extraCommands = ""; fakeRootCommands = ""; }',
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


def test_uv_lock_packages_and_dependencies_come_from_the_lock():
    p = evaluate('builtins.toJSON (builtins.attrNames ((ws.mkPyprojectOverlay { sourcePreference = "wheel"; }) { stdenv = pkgs.stdenv; } { }))')
    import json
    names = json.loads(p.stdout)
    assert "torch" in names and "nvidia-cublas-cu12" in names and "comfyver-version-fixture" in names
