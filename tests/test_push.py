"""`comfyver push`: Debian's docker-registry on 127.0.0.1 and Debian's skopeo, images built from folders."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.ship import push

from tests.support.registry import Registry, free_port, fresh_runner_path, write_docker_archive

USERS = {"alice": "correct-horse-battery"}

def main(argv: list[str]) -> int:
    """The real CLI entry point, with only this module's verb registered (other verbs may be mid-change)."""
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["comfyver.cli.push"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved



def make_project(root: Path, vid: str = "demo", ref: str = "v0.3.75") -> dict:
    (root / "versions").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    lock = lockfile.empty(vid, {"type": "git", "url": "https://example.com/ComfyUI", "ref": ref},
                          {"type": "git", "url": "https://example.com/ComfyUI", "rev": "a" * 40,
                           "hash": "sha256-" + "A" * 43 + "=", "submodules": False})
    lockfile.write(root / "versions" / vid / "version.json", lock)
    return lock


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry", users=USERS)
    yield reg
    reg.close()


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("REGISTRY_PASSWORD", USERS["alice"])


def layers(seed: int, n: int = 3) -> list[dict]:
    r = random.Random(seed)
    return [{f"layer{i}/data.bin": r.randbytes(256 * 1024)} for i in range(n)]


def inspect(reg: Registry, ref: str, tmp: Path) -> dict:
    auth = push.write_authfile(reg.host, "alice", USERS["alice"], Path(tmp))
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"--authfile={auth}", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(auth)
    return json.loads(out)


def test_push_pull_back_same_digest_and_layers(tmp_path, registry, creds, monkeypatch, capsys):
    lock = make_project(tmp_path / "proj")
    archive = tmp_path / "image.tar"
    built = write_docker_archive(archive, layers(1))
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))

    rc = main(["push", "demo", "--to", f"{registry.host}/team/comfyui", "--archive", str(archive), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    tag = f"demo-{lockfile.lock_digest(lock)[:12]}"
    assert out["image"] == f"{registry.host}/team/comfyui:{tag}"
    assert out["reference"] == f"{registry.host}/team/comfyui@{out['digest']}"

    # pull back: the tag resolves to the pushed manifest digest, and the layers are ours
    info = inspect(registry, out["image"], tmp_path)
    assert info["Digest"] == out["digest"]
    pulled = tmp_path / "pulled"
    auth = push.write_authfile(registry.host, "alice", USERS["alice"], tmp_path)
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"--src-authfile={auth}",
                    f"docker://{out['reference']}", f"dir:{pulled}"], check=True, capture_output=True)
    manifest = json.loads((pulled / "manifest.json").read_text())
    config = json.loads((pulled / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["rootfs"]["diff_ids"] == built["diff_ids"]
    assert "sha256:" + __import__("hashlib").sha256((pulled / "manifest.json").read_bytes()).hexdigest() == out["digest"]


def test_second_push_sends_only_new_layers(tmp_path, registry, creds):
    base = layers(2, 3)
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    write_docker_archive(first, base)
    write_docker_archive(second, base[:2] + [{"new/data.bin": random.Random(3).randbytes(256 * 1024)}])
    d1 = push.push(first, push.parse_destination(f"{registry.host}/team/comfyui:one", "x"))
    uploaded_first = registry.uploaded_digests()
    assert len(uploaded_first) == 4  # 3 layers + config
    d2 = push.push(second, push.parse_destination(f"{registry.host}/team/comfyui:two", "x"))
    uploaded_second = registry.uploaded_digests()[len(uploaded_first):]
    assert d1.digest != d2.digest
    assert len(uploaded_second) == 2  # the one new layer + the new config; the 2 shared layers were not re-sent
    assert not set(uploaded_second) & set(uploaded_first)


def test_a_fresh_runner_sends_only_new_layers(tmp_path, registry, creds, monkeypatch):
    """Each push as on a fresh CI runner (no skopeo blob-info cache): the layers the registry has are not sent
    again, because their compressed digests are known before sending (deterministic compression, then HEAD)."""
    monkeypatch.setenv("PATH", fresh_runner_path(tmp_path / "bin"))
    base = layers(12, 3)
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    write_docker_archive(first, base)
    write_docker_archive(second, base[:2] + [{"node/data.bin": random.Random(13).randbytes(256 * 1024)}])
    r1 = push.push(first, push.parse_destination(f"{registry.host}/team/comfyui:one", "x"))
    sent_first = registry.uploaded_digests()
    assert len(sent_first) == 4 and (r1.layers_sent, r1.layers_reused) == (3, 0)
    r2 = push.push(second, push.parse_destination(f"{registry.host}/team/comfyui:two", "x"))
    sent_second = registry.uploaded_digests()[len(sent_first):]
    assert len(sent_second) == 2  # the new layer and the new config, from a runner that never saw the first push
    assert (r2.layers_sent, r2.layers_reused) == (1, 2) and 0 < r2.bytes_sent < r2.bytes_total / 2
    again = push.push(second, push.parse_destination(f"{registry.host}/team/comfyui:three", "x"))
    assert again.digest == r2.digest and registry.uploaded_digests()[len(sent_first) + 2:] == []  # nothing but a manifest
    assert again.as_json()["layers"] == {"sent": 0, "reused": 3, "bytes_sent": 0, "bytes_total": r2.bytes_total}


def test_the_flakes_zstd_archive_is_pushed(tmp_path, registry, creds):
    """`nix build .#image-<id>` writes a zstd-compressed docker-archive (compressor = "zstd" in nix/image.nix)."""
    tar = tmp_path / "image.tar"
    built = write_docker_archive(tar, layers(14, 2))
    zst = tmp_path / "image.tar.zst"
    subprocess.run(["zstd", "-q", str(tar), "-o", str(zst)], check=True)
    assert zst.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    res = push.push(zst, push.parse_destination(f"{registry.host}/team/zstd:v1", "x"))
    info = inspect(registry, res.destination.with_digest(res.digest), tmp_path)
    assert len(info["Layers"]) == 2 and res.layers_sent == 2
    (tmp_path / "a").mkdir()
    raw = subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                          f"--authfile={push.write_authfile(registry.host, 'alice', USERS['alice'], tmp_path / 'a')}",
                          f"docker://{res.destination.with_digest(res.digest)}"], check=True, capture_output=True, text=True)
    assert json.loads(raw.stdout)["rootfs"]["diff_ids"] == built["diff_ids"]


def test_stream_script_source(tmp_path, registry, creds):
    tar = tmp_path / "inner.tar"
    write_docker_archive(tar, layers(4, 1))
    script = tmp_path / "stream-image"
    script.write_text(f"#!/bin/sh\nexec cat {tar}\n")
    script.chmod(0o755)
    res = push.push(script, push.parse_destination(f"{registry.host}/team/streamed:v1", "x"))
    assert res.digest.startswith("sha256:") and len(registry.uploaded_digests()) == 2


def test_wrong_credentials_clear_error_and_no_secret(tmp_path, registry, monkeypatch, capsys):
    make_project(tmp_path / "proj")
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, layers(5, 1))
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    monkeypatch.setenv("REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("REGISTRY_PASSWORD", "wrong-password-123")
    rc = main(["push", "demo", "--to", f"{registry.host}/team/comfyui:v1", "--archive", str(archive)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"push to {registry.host}/team/comfyui:v1 failed" in err
    assert "REGISTRY_USERNAME" in err and "refused the credentials" in err
    assert "wrong-password-123" not in err
    assert registry.uploaded_digests() == []


def test_unreachable_registry(tmp_path, creds):
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, layers(6, 1))
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(ComfyverError) as exc:
        push.push(archive, push.parse_destination(f"{host}/team/comfyui:v1", "x"), retries=0)
    assert f"push to {host}/team/comfyui:v1 failed" in exc.value.message
    assert f"cannot reach {host}" in exc.value.hint


def test_authfile_is_private(tmp_path):
    path = push.write_authfile("reg.example:5000", "u", "p", tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["auths"]["reg.example:5000"]["auth"] == "dTpw"


@pytest.mark.parametrize("bad", ["comfyui", "-oProxyCommand=x/y", "ghcr.io/Acme/x", "ghcr.io/acme/x:-t",
                                 "ghcr.io/acme/../x", "ghcr.io//x", "docker://ghcr.io/acme/x",
                                 "ghcr.io/acme/x\n", "ghcr.io/acme/x:v1\n"])  # `$` would accept a final newline
def test_bad_destination_is_usage_error(bad):
    with pytest.raises(UsageError) as exc:
        push.parse_destination(bad, "t")
    assert repr(bad) in exc.value.message


def test_destination_forms():
    assert push.parse_destination("ghcr.io/acme/comfy", "demo-abc").tagged == "ghcr.io/acme/comfy:demo-abc"
    assert push.parse_destination("localhost:5000/a/b:v1", "x").tagged == "localhost:5000/a/b:v1"
    assert push.is_local_registry("127.0.0.1:5000") and not push.is_local_registry("ghcr.io")


def test_missing_archive_says_how_to_build(tmp_path, monkeypatch, capsys):
    make_project(tmp_path / "proj")
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path)
    rc = main(["push", "demo", "--to", "ghcr.io/acme/comfy"])
    err = capsys.readouterr().err
    assert rc == 1 and "nix build .#image-<id>" in err and "result" in err


def test_not_an_image(tmp_path):
    bogus = tmp_path / "bogus"
    bogus.write_text("hello")
    with pytest.raises(ComfyverError, match="neither a docker-archive"):
        push.push(bogus, push.parse_destination("127.0.0.1:1/a/b:c", "x"))


def test_human_output(tmp_path, registry, creds, monkeypatch, capsys):
    lock = make_project(tmp_path / "proj")
    write_docker_archive(tmp_path / "result", layers(8, 1))
    monkeypatch.setenv("COMFYVER_ROOT", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path)  # ./result is the default archive
    assert main(["push", "demo", "--to", f"{registry.host}/team/comfyui"]) == 0
    cap = capsys.readouterr()
    tag = f"demo-{lockfile.lock_digest(lock)[:12]}"
    assert f"pushed {registry.host}/team/comfyui:{tag}" in cap.out
    assert f"image  {registry.host}/team/comfyui@sha256:" in cap.out
    assert "layers 1 sent (" in cap.out and "0 already in the registry" in cap.out
    assert "Copying blob" in cap.err and USERS["alice"] not in cap.out + cap.err


def test_archive_path_with_colon_is_refused(tmp_path):
    weird = tmp_path / "a:b.tar"
    write_docker_archive(weird, layers(9, 1))
    with pytest.raises(UsageError, match="contains ':'"):
        push.push(weird, push.parse_destination("127.0.0.1:1/a/b:c", "x"))
