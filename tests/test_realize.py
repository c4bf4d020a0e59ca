"""realize / fetch / verify on a small upstream served on 127.0.0.1 (git http-backend + HTTP model server)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError
from comfyver.cli import main
from comfyver.realize import realize, verify
from comfyver.sources import modelstore

from tests.test_realize_helpers import make_project, model_gets

KEY = "comfyver_test/tiny.bin"


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


@pytest.fixture
def proj(tmp_path, git_server, http_server):
    return make_project(tmp_path, git_server, http_server)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_realize_layout_venv_models_and_marker(proj, tmp_path, http_server):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    core = into  # the folder is the ComfyUI tree (COMFY_HOME)
    assert (core / "main.py").read_text() == "print('core')\n"
    assert "ShowTextHash" in (core / "custom_nodes/comfyui-text-node/__init__.py").read_text()
    assert (core / "custom_nodes/comfyui-model-node/__init__.py").is_file()
    assert not list(into.rglob(".git"))
    link = into / "models" / KEY
    assert link.is_symlink() and link.read_bytes() == proj.model_bytes[KEY]
    blob = modelstore.default_store() / "sha256" / proj.lock["models"][KEY]["locked"]["sha256"]
    assert link.resolve() == blob.resolve()
    yaml_text = (core / "extra_model_paths.yaml").read_text()
    assert "base_path: models" in yaml_text and '"comfyver_test": "comfyver_test"' in yaml_text
    py = subprocess.run([str(into / ".venv/bin/python"), "-c", "import six, idna; print(six.__version__, idna.__version__)"],
                        capture_output=True, text=True, check=True)
    assert py.stdout.split() == ["1.16.0", "3.10"]
    marker = json.loads((into / ".comfyver-realized.json").read_text())
    assert marker["lock"] == lockfile.lock_digest(proj.lock)
    assert marker["comfyui"]["rev"] == proj.lock["comfyui"]["locked"]["rev"]
    assert marker["coreAdded"] == ["models", "models/comfyver_test"]  # the core has custom_nodes/ of its own
    assert oct((into).stat().st_mode & 0o777) == "0o755"
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []


def test_second_realize_is_a_fast_noop(proj, tmp_path, git_server, http_server):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    inode = (into / "main.py").stat().st_ino
    git_before, http_before = len(git_server.requests), len(http_server.requests)
    t = time.monotonic()
    realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert time.monotonic() - t < 1.0
    assert (into / "main.py").stat().st_ino == inode  # not rebuilt
    assert (len(git_server.requests), len(http_server.requests)) == (git_before, http_before)


def test_changed_lock_rebuilds_and_swaps_atomically(proj, tmp_path):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    del proj.lock["nodes"]["comfyui-text-node"]
    lockfile.write(proj.vdir / "version.json", proj.lock)
    realize.realize(proj.root, proj.vid, into)
    assert not (into / "custom_nodes/comfyui-text-node").exists()
    assert (into / "custom_nodes/comfyui-model-node").is_dir()
    assert verify.verify(proj.root, proj.vid, into) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == [".out.lock"]


def test_refuses_to_replace_a_foreign_folder(proj, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ComfyverError, match="not made by `comfyver realize`"):
        realize.realize(proj.root, proj.vid, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_wrong_node_hash_is_refused_and_nothing_is_placed(proj, tmp_path):
    proj.lock["nodes"]["comfyui-text-node"]["locked"]["hash"] = "sha256-" + "A" * 43 + "="
    lockfile.write(proj.vdir / "version.json", proj.lock)
    with pytest.raises(ComfyverError, match="node comfyui-text-node: NAR hash of the checkout is sha256-"):
        realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_missing_uv_lock_names_the_file_and_the_fix(proj, tmp_path):
    (proj.vdir / "uv.lock").unlink()
    with pytest.raises(ComfyverError, match=r"uv\.lock is missing") as e:
        realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert "comfyver lock v1" in str(e.value)


def test_fetch_then_offline_realize_needs_no_network(proj, tmp_path, git_server, http_server, capsys):
    rc, out, _ = run_cli(capsys, "--root", str(proj.root), "fetch", proj.vid, "--json")
    assert rc == 0 and json.loads(out)["models"] == 1
    git_server.httpd.down = True
    http_server.close()
    git_before = len(git_server.requests)
    rc, out, err = run_cli(capsys, "--root", str(proj.root), "realize", proj.vid, "--into", str(tmp_path / "off"),
                           "--offline", "--json")
    assert rc == 0, err
    assert json.loads(out)["path"] == str(tmp_path / "off")
    assert len(git_server.requests) == git_before
    assert verify.verify(proj.root, proj.vid, tmp_path / "off", deep=True) == []


def test_offline_without_fetch_names_what_is_missing(proj, tmp_path, capsys):
    rc, _out, err = run_cli(capsys, "--root", str(proj.root), "realize", proj.vid, "--into", str(tmp_path / "o"),
                           "--offline")
    assert rc == 1
    # git objects are cached by locking; the model is not
    assert f"model {KEY}: not in the model store" in err and "--offline" in err and "comfyver fetch" in err
    assert not (tmp_path / "o").exists()


def test_corrupted_cached_model_is_detected_and_refetched(proj, tmp_path, http_server):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    served = proj.model_url_path[KEY]
    assert len(model_gets(http_server, served)) == 1
    blob = (into / "models" / KEY).resolve()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 16)
    found = verify.verify(proj.root, proj.vid, into)
    assert [(m.kind, m.name) for m in found] == [("model", KEY)]
    assert found[0].found.startswith("sha256 ")
    realize.realize(proj.root, proj.vid, into)  # unchanged lock: re-checks models, re-fetches the bad one
    assert len(model_gets(http_server, served)) == 2
    assert blob.read_bytes() == proj.model_bytes[KEY]
    assert verify.verify(proj.root, proj.vid, into) == []


def test_model_corrupted_in_place_with_the_same_stat_is_found_by_deep_and_rehash(proj, tmp_path, http_server):
    """Same size, mtime and inode: the quick check trusts the stat cache; --deep and --rehash read every byte."""
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert verify.verify(proj.root, proj.vid, into) == []  # the stat cache now knows the blob
    blob = (into / "models" / KEY).resolve()
    st = blob.stat()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(10)
        f.write(b"\x00" * 8)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert blob.stat().st_ino == st.st_ino and blob.stat().st_mtime_ns == st.st_mtime_ns
    assert [(m.kind, m.name) for m in verify.verify(proj.root, proj.vid, into, deep=True)] == [("model", KEY)]
    served = proj.model_url_path[KEY]
    before = len(model_gets(http_server, served))
    realize.realize(proj.root, proj.vid, into, rehash=True)  # unchanged lock, but every blob hashed again
    assert len(model_gets(http_server, served)) == before + 1
    assert blob.read_bytes() == proj.model_bytes[KEY]
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []


def test_tampered_node_file_is_named_by_verify_deep(proj, tmp_path, capsys):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    target = into / "custom_nodes/comfyui-model-node/__init__.py"
    target.write_text(target.read_text() + "\n# changed\n")
    assert verify.verify(proj.root, proj.vid, into) == []  # quick mode trusts the recorded revs
    rc, out, _ = run_cli(capsys, "--root", str(proj.root), "verify", proj.vid, "--dir", str(into), "--deep", "--json")
    assert rc == 1
    found = json.loads(out)["mismatches"]
    assert [(m["kind"], m["name"]) for m in found] == [("node", "comfyui-model-node")]
    assert "__init__.py" in found[0]["found"]
    rc, out, _ = run_cli(capsys, "--root", str(proj.root), "verify", proj.vid, "--dir", str(into), "--deep")
    assert rc == 1 and "comfyui-model-node" in out and "mismatch" in out


def test_tampered_core_file_and_python_package_are_found(proj, tmp_path):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    (into / "main.py").write_text("print('evil')\n")
    six_py = next((into / ".venv").glob("lib/python*/site-packages/six.py"))
    six_py.write_text(six_py.read_text() + "\n# changed\n")
    found = verify.verify(proj.root, proj.vid, into, deep=True)
    assert ("comfyui", "ComfyUI") in [(m.kind, m.name) for m in found]
    assert any(m.kind == "python" and m.name == "six: six.py" for m in found), found


def test_python_version_drift_is_reported(proj, tmp_path):
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    subprocess.run(["uv", "pip", "install", "--quiet", "--python", str(into / ".venv/bin/python"), "six==1.15.0"],
                   check=True)
    found = verify.verify(proj.root, proj.vid, into)
    assert [(m.kind, m.name, m.expected, m.found) for m in found] == [("python", "six", "1.16.0", "1.15.0")]


def test_verify_of_a_missing_folder(proj, tmp_path, capsys):
    rc, out, _ = run_cli(capsys, "--root", str(proj.root), "verify", proj.vid, "--dir", str(tmp_path / "none"), "--json")
    assert rc == 1 and json.loads(out)["mismatches"][0]["kind"] == "folder"


def test_realize_needs_a_valid_version_id(proj, capsys):
    rc, _, err = run_cli(capsys, "--root", str(proj.root), "realize", "../etc")
    assert rc == 2 and "invalid version id" in err


# -- faults across processes ---------------------------------------------------

def _cli_env(proj) -> dict:
    return {**os.environ, "COMFYVER_ROOT": str(proj.root), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "scripts")}


def test_kill_9_at_random_points_then_rerun_completes(tmp_path, git_server, http_server):
    proj = make_project(tmp_path, git_server, http_server,
                        models={KEY: os.urandom(3_000_000), "comfyver_test/second.bin": os.urandom(2_000_000)})
    into = tmp_path / "out"
    rng = random.Random(1234)
    code = ("import sys; from pathlib import Path; from comfyver.realize import realize; "
            "realize.realize(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))")
    cmd = [sys.executable, "-c", code, str(proj.root), proj.vid, str(into)]
    for _ in range(6):
        p = subprocess.Popen(cmd, env=_cli_env(proj), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        if into.exists():  # whatever is in place is complete and correct
            assert verify.verify(proj.root, proj.vid, into, deep=True) == []
        for blob in (modelstore.default_store() / "sha256").glob("*"):
            if len(blob.name) == 64:  # a blob under its final name is always whole
                assert modelstore.file_sha256(blob) == blob.name
    done = subprocess.run(cmd, env=_cli_env(proj), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []
    assert not list(tmp_path.glob(".out.tmp-*")) and not list(tmp_path.glob(".out.old-*"))


def _realize_in_child(args):
    root, vid, into, cache, uv_cache = args
    os.environ["COMFYVER_CACHE"], os.environ["UV_CACHE_DIR"] = cache, uv_cache
    return str(realize.realize(Path(root), vid, Path(into)))


def test_four_concurrent_realizers_download_each_model_once(tmp_path, git_server, http_server):
    proj = make_project(tmp_path, git_server, http_server,
                        models={KEY: os.urandom(4_000_000), "comfyver_test/second.bin": os.urandom(1_000_000)})
    jobs = [(str(proj.root), proj.vid, str(tmp_path / f"w{i}"), os.environ["COMFYVER_CACHE"], os.environ["UV_CACHE_DIR"])
            for i in range(4)]
    with ProcessPoolExecutor(4) as pool:
        outs = list(pool.map(_realize_in_child, jobs))
    assert len(set(outs)) == 4
    for key, served in proj.model_url_path.items():
        assert len(model_gets(http_server, served)) == 1, key
    for out in outs:
        assert verify.verify(proj.root, proj.vid, Path(out), deep=True) == []


def test_zip_node_is_unpacked_verified_and_cached_for_offline(tmp_path, git_server, http_server):
    from tests.test_realize_helpers import ZIP_NODE, add_zip_node

    proj = make_project(tmp_path, git_server, http_server)
    add_zip_node(proj, http_server, tmp_path)
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert (into / "custom_nodes" / ZIP_NODE / "__init__.py").is_file()
    assert verify.verify(proj.root, proj.vid, into, deep=True) == []
    zips = [r for r in http_server.requests if r["path"] == "/pack.zip"]
    assert len(zips) == 1
    realize.realize(proj.root, proj.vid, tmp_path / "again", offline=False)
    assert len([r for r in http_server.requests if r["path"] == "/pack.zip"]) == 1  # archive cache reused


def test_zip_with_other_contents_is_refused_and_not_cached(tmp_path, git_server, http_server):
    from tests.test_realize_helpers import add_zip_node

    proj = make_project(tmp_path, git_server, http_server)
    add_zip_node(proj, http_server, tmp_path)
    served = http_server.files_root / "pack.zip"
    good = served.read_bytes()
    served.write_bytes(good.replace(b"NODE_CLASS_MAPPINGS = {}", b"NODE_CLASS_MAPPINGS = []"))  # bad CRC
    with pytest.raises(ComfyverError, match=r"node zip-pack: archive entry .* is corrupt"):
        realize.realize(proj.root, proj.vid, tmp_path / "out")
    archives = Path(os.environ["COMFYVER_CACHE"]) / "archives"
    assert not list(archives.glob("*.zip"))
    with zipfile.ZipFile(served, "w") as zf:  # a valid archive with other contents
        zf.writestr("zip-pack-1.0/__init__.py", "import os\n")
    with pytest.raises(ComfyverError, match="node zip-pack: NAR hash of the checkout is"):
        realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert not list(archives.glob("*.zip")) and not (tmp_path / "out").exists()


def test_run_local_refuses_a_folder_that_is_not_realized_or_stale(proj, tmp_path):
    from comfyver.realize import localrun

    with pytest.raises(ComfyverError, match="is not a realized version") as e:
        localrun.run_local(proj.root, proj.vid, tmp_path / "none", [])
    assert "comfyver realize v1 --into" in str(e.value)
    into = realize.realize(proj.root, proj.vid, tmp_path / "out")
    del proj.lock["nodes"]["comfyui-text-node"]
    lockfile.write(proj.vdir / "version.json", proj.lock)
    with pytest.raises(ComfyverError, match="realized from an older lock"):
        localrun.run_local(proj.root, proj.vid, into, [])


def test_model_changed_upstream_is_refused_naming_it(proj, tmp_path, http_server):
    served = http_server.files_root / proj.model_url_path[KEY]
    served.write_bytes(b"y" * len(proj.model_bytes[KEY]))
    with pytest.raises(ComfyverError, match=f"model {KEY}: sha256 mismatch") as e:
        realize.realize(proj.root, proj.vid, tmp_path / "out")
    assert "comfyver update" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not list((modelstore.default_store() / "sha256").glob("[0-9a-f]" * 64))


def test_model_hash_matches_hashlib_and_reports_progress(tmp_path):
    data = os.urandom((4 << 20) * 2 + 12345)  # crosses read blocks, ends mid-block
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    seen = []
    assert modelstore.file_sha256(f, progress=seen.append) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)
    with pytest.raises(KeyboardInterrupt):  # an interrupted hash stops its reader thread too
        modelstore.file_sha256(f, progress=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    time.sleep(0.3)
    import threading
    assert not [t for t in threading.enumerate() if t.name == "sha256-reader"]


def test_hf_token_goes_to_its_host_only_and_nowhere_else(proj, tmp_path, http_server, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_realize_secret")
    rc, out, err = run_cli(capsys, "--root", str(proj.root), "realize", proj.vid, "--into", str(tmp_path / "out"))
    assert rc == 0, err
    got = model_gets(http_server, proj.model_url_path[KEY])
    assert got[0]["headers"].get("Authorization") == "Bearer hf_realize_secret"
    assert "hf_realize_secret" not in out + err
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file() and not f.is_symlink() and ".venv" not in f.parts:
            assert b"hf_realize_secret" not in f.read_bytes(), f
    assert b"hf_realize_secret" not in modelstore.StatCache().path.read_bytes()


def test_models_dir_that_is_a_file_is_a_clear_error(proj, tmp_path):
    from comfyver.base.errors import UsageError

    f = tmp_path / "models.txt"
    f.write_text("not a folder")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        realize.realize(proj.root, proj.vid, tmp_path / "out", models_dir=f)
