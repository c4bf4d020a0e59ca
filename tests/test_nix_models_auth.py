"""The gated-model fetch: models.nix's netrcPhase run the way nixpkgs' fetchurl runs it, with the real curl.

fetchurl's builder sources `netrcPhase` (with the token variable let through
by `netrcImpureEnvVars`), then appends `--netrc-file $PWD/netrc` to curlOpts
and calls curl with `--location`. Here that sequence runs against two local
servers: the origin answers with a redirect to a CDN on another host.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from tests.nix import harness as h
from tests.support.httpserver import HTTPServer

TOKEN = "hf_test_token_0123456789"


@pytest.fixture
def servers(tmp_path):
    cdn_root = tmp_path / "cdn"
    cdn_root.mkdir()
    (cdn_root / "blob").write_bytes(b"weights" * 100)
    cdn = HTTPServer(cdn_root)
    origin = HTTPServer()
    # "localhost" vs "127.0.0.1": another host name, as huggingface.co -> its CDN
    origin.routes["/org/model/resolve/main/model.safetensors"] = \
        lambda handler, body: (302, {"Location": f"http://localhost:{cdn.port}/blob"}, b"")
    yield origin, cdn, cdn_root / "blob"
    origin.close()
    cdn.close()


def plan_entry(tmp_path, url: str, auth: str) -> dict:
    lock = json.loads((h.FIXTURES / "minimal" / "version.json").read_text())
    lock["id"] = "auth"
    lock["models"] = {"loras/gated model.safetensors": {
        "original": {"url": url}, "locked": {"url": url, "sha256": "0" * 64, "size": 700, "auth": auth}}}
    (tmp_path / "versions" / "auth").mkdir(parents=True)
    (tmp_path / "versions" / "auth" / "version.json").write_text(json.dumps(lock))
    expr = f"""
      let lib = import {h.SHARED_INPUTS}/nixpkgs-lib/lib;
          models = import {h.ROOT}/nix/models.nix {{ inherit lib; pkgs = {{ }}; }};
      in models.plan ((import {h.ROOT}/nix/lock.nix).read {tmp_path}/versions "auth")"""
    return json.loads(h.nix("eval", "--json", "--impure", "--expr", expr).stdout)["loras/gated model.safetensors"]


def fetch_like_fetchurl(tmp_path, entry: dict, env: dict) -> subprocess.CompletedProcess:
    build = tmp_path / "build"
    build.mkdir(exist_ok=True)
    script = (f'curlOpts=""\n{entry["netrcPhase"]}\ncurlOpts="$curlOpts --netrc-file $PWD/netrc"\n'
              f'curl --location --max-redirs 20 --fail --silent --show-error $curlOpts -o "$out" "$url"\n')
    keep = {"PATH": os.environ["PATH"], "url": entry["url"], "out": str(tmp_path / "out")}
    return subprocess.run(["bash", "-euc", script], cwd=build, env={**keep, **env}, capture_output=True, text=True)


def test_token_goes_to_the_origin_only_and_the_file_arrives(tmp_path, servers):
    origin, cdn, blob = servers
    entry = plan_entry(tmp_path, f"{origin.url}/org/model/resolve/main/model.safetensors", "hf")
    assert entry["netrcImpureEnvVars"] == ["HF_TOKEN"] and TOKEN not in json.dumps(entry)
    p = fetch_like_fetchurl(tmp_path, entry, {"HF_TOKEN": TOKEN})
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256((tmp_path / "out").read_bytes()).digest() == hashlib.sha256(blob.read_bytes()).digest()
    assert origin.requests[0]["headers"].get("Authorization") == f"Bearer {TOKEN}"
    assert "Authorization" not in cdn.requests[0]["headers"]


def test_civitai_token_variable(tmp_path, servers):
    origin, _cdn, _ = servers
    entry = plan_entry(tmp_path, f"{origin.url}/org/model/resolve/main/model.safetensors", "civitai")
    p = fetch_like_fetchurl(tmp_path, entry, {"CIVITAI_TOKEN": "civ-token", "HF_TOKEN": TOKEN})
    assert p.returncode == 0, p.stderr
    assert origin.requests[0]["headers"].get("Authorization") == "Bearer civ-token"


def test_missing_token_is_named_with_the_model(tmp_path, servers):
    origin, _, _ = servers
    entry = plan_entry(tmp_path, f"{origin.url}/org/model/resolve/main/model.safetensors", "hf")
    p = fetch_like_fetchurl(tmp_path, entry, {})
    assert "HF_TOKEN is not set in the builder's environment for model loras/gated model.safetensors" in p.stderr
    assert "nix-daemon" in p.stderr
    assert "Authorization" not in origin.requests[0]["headers"]
