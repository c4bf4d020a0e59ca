"""Model placement `cached` (issue 25): the worker takes the lock's Hugging Face models from the Hugging Face cache
RunPod fills on the host (handler/hfcache.py), and `comfyver deploy --models cached` records the placement and
names the repository the endpoint must cache (comfyver/sources/cachedmodels.py), against the REST v2 stand-in.

The worker runs for real (`python -m handler --rp_serve_api`, a real ComfyUI on the CPU); the cache is a tmp
folder in the Hugging Face layout (models--ORG--NAME/{blobs,refs,snapshots}) holding a tiny model whose real
sha256 is in the lock."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from comfyver.base import lockfile

from tests.handler import env
from tests.support.runpodv2 import RunPodV2, schema_errors
from tests.test_deploy_v2 import DOC, IMG1, KEY, main
from tests.test_push import make_project

REPO = "acme/tiny-lora"
COMMIT = "1" * 40
NEWER = "2" * 40
FILE = "lora/tiny.safetensors"
DATA = b"a tiny model for the cached placement\n" * 32
KEY_HF = "loras/tiny.safetensors"
KEY_OTHER = "vae/other.bin"  # not on Hugging Face: must come another way



def hf_locked(repo: str, commit: str, path: str, data: bytes) -> dict:
    return {"original": {"url": f"hf://{repo}@{commit}/{path}"},
            "locked": {"url": f"https://huggingface.co/{repo}/resolve/{commit}/{path}",
                       "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}


def write_lock(root: Path, models: dict) -> Path:
    lock = make_project(root)
    lock["models"] = models
    path = root / "versions" / "demo" / "version.json"
    lockfile.write(path, lock)
    return path


def demo_lock(root: Path, data: bytes = DATA) -> Path:
    other = b"not on hugging face"
    return write_lock(root, {
        KEY_HF: hf_locked(REPO, COMMIT, FILE, data),
        KEY_OTHER: {"original": {"url": "https://example.com/other.bin"},
                    "locked": {"url": "https://example.com/other.bin", "sha256": hashlib.sha256(other).hexdigest(),
                               "size": len(other)}}})


def hf_cache(hub: Path, repo: str, commit: str, path: str, data: bytes, ref: str | None = "main") -> Path:
    """One file of `repo` at `commit` in the Hugging Face cache layout; the snapshot file links to its blob."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo_dir / "snapshots" / commit / path
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture(autouse=True)
def _hf_host(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)  # locked URLs are huggingface.co's
    monkeypatch.delenv("COMFYVER_MODEL_LINKS", raising=False)


def worker_env(tmp_path: Path, lock: Path, hub: Path) -> dict[str, str]:
    home = env.comfy_tree(tmp_path)  # its test nodes: ComfyverLoraDigest reads a loras file as a loader would
    return {"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
            "COMFYUI_STATE_DIR": str(tmp_path / "state"), "COMFY_MODELS": "cached", "COMFY_HF_CACHE": str(hub),
            "COMFYVER_LOCK": str(lock), "COMFYVER_VERSION_ID": "demo", "COMFY_HF_CACHED_MODEL": REPO}


def settings(tmp_path: Path, lock: Path, hub: Path, **kw):
    from handler.settings import Settings
    return Settings(comfy_home=None, comfy_url=None, comfy_state_dir=tmp_path / "state", models_dir=None,
                    models_placement="cached", hf_cache_dir=hub, hf_cached_repos=[], lock_file=lock,
                    version_id="demo", lock_digest=None, versions_root=None, **kw)


# ------------------------------------------------------------------ the worker, end to end
def test_a_job_runs_with_its_model_from_the_hugging_face_cache(tmp_path):
    lock = demo_lock(tmp_path / "proj")
    snap = hf_cache(tmp_path / "hub", REPO, COMMIT, FILE, DATA)
    api = env.LocalAPI(worker_env(tmp_path, lock, tmp_path / "hub"), tmp_path / "api.log")
    try:
        # ComfyUI lists the model under the lock's name (loras/tiny.safetensors -> tiny.safetensors)
        result = api.runsync({"workflow": {"1": {"class_type": "ComfyverLoraDigest",
                                                 "inputs": {"lora_name": "tiny.safetensors"}}}})
    finally:
        api.stop()
    assert result["status"] == "COMPLETED", (result, (tmp_path / "api.log").read_text()[-3000:])
    texts = [o["text"] for o in result["output"]["outputs"] if o["kind"] == "text"]
    assert texts == [f"tiny.safetensors {hashlib.sha256(DATA).hexdigest()} {len(DATA)}"]
    link = tmp_path / "state" / "models" / KEY_HF
    assert link.is_symlink() and link.resolve() == snap.resolve()
    # the model that is not on Hugging Face is named: it must come another way
    log = (tmp_path / "api.log").read_text()
    assert "not in the Hugging Face cache and come another way" in log and KEY_OTHER in log


def test_a_corrupted_cached_file_stops_the_worker_with_what_to_do(tmp_path):
    lock = demo_lock(tmp_path / "proj")
    bad = DATA.replace(b"tiny", b"TINY")
    snap = hf_cache(tmp_path / "hub", REPO, COMMIT, FILE, bad)
    with pytest.raises(RuntimeError) as info:
        env.LocalAPI(worker_env(tmp_path, lock, tmp_path / "hub"), tmp_path / "api.log")
    msg = str(info.value)
    assert f"model {KEY_HF}" in msg and str(snap) in msg
    assert f"expected sha256 {hashlib.sha256(DATA).hexdigest()}" in msg
    assert f"has sha256 {hashlib.sha256(bad).hexdigest()}" in msg
    assert "Fix the endpoint's cached model" in msg and "nothing is downloaded instead" in msg
    assert "starting ComfyUI" not in msg  # refused before ComfyUI starts
    assert not (tmp_path / "state" / "models" / KEY_HF).exists()


# ------------------------------------------------------------------ verification, once
def test_the_verification_runs_once_a_second_start_answers_from_the_stat_cache(tmp_path, monkeypatch):
    from comfyver.sources import modelstore

    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    snap = hf_cache(tmp_path / "hub", REPO, COMMIT, FILE, DATA)
    hashed: list[Path] = []
    real_hash = modelstore._sha256_overlapped
    monkeypatch.setattr(modelstore, "_sha256_overlapped", lambda p, *a: hashed.append(p) or real_hash(p, *a))

    first = hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))
    assert first.cached == {KEY_HF: snap.resolve()} and hashed == [snap.resolve()]
    assert first.missing == [KEY_OTHER]
    # the stat cache in the state folder: the verified file's real path -> its stat and sha256
    verified = json.loads((tmp_path / "state" / hfcache.VERIFIED).read_text())
    st = snap.resolve().stat()
    assert verified[str(snap.resolve())] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev,
                                             hashlib.sha256(DATA).hexdigest()]

    # bytes changed in place with size, mtime and inode kept: only a re-hash would notice; the second start does not
    with open(snap, "r+b") as fh:
        fh.write(b"A")
    os.utime(snap.resolve(), ns=(st.st_atime_ns, st.st_mtime_ns))
    second = hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))
    assert second.cached == {KEY_HF: snap.resolve()} and hashed == [snap.resolve()]

    # a file whose stat changed is hashed again (and refused)
    snap.resolve().write_bytes(DATA + b"x")
    with pytest.raises(hfcache.CachedModelError, match="cached file is corrupt"):
        hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))
    assert len(hashed) == 2


# ------------------------------------------------------------------ where it is looked for
def test_a_cache_filled_at_a_newer_commit_of_main_serves_the_same_bytes(tmp_path):
    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    snap = hf_cache(tmp_path / "hub", REPO, NEWER, FILE, DATA)  # refs/main -> NEWER, no snapshot of COMMIT
    assert hfcache.place(settings(tmp_path, lock, tmp_path / "hub")).cached == {KEY_HF: snap.resolve()}


def test_a_missing_cached_file_names_the_paths_looked_at(tmp_path):
    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    hf_cache(tmp_path / "hub", REPO, COMMIT, "lora/another.safetensors", DATA)
    with pytest.raises(hfcache.CachedModelError) as info:
        hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))
    msg = str(info.value)
    want = tmp_path / "hub" / "models--acme--tiny-lora" / "snapshots" / COMMIT / FILE
    assert f"model {KEY_HF}" in msg and "is not in the Hugging Face cache" in msg and str(want) in msg
    assert f"{REPO} at revision {COMMIT}" in msg


def test_no_cached_repository_at_all_is_refused_naming_them(tmp_path):
    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    (tmp_path / "hub").mkdir()
    with pytest.raises(hfcache.CachedModelError, match=f"no Hugging Face repository .* is in the cache .*{REPO}"):
        hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))


def test_models_of_other_repositories_and_sources_come_from_the_volume(tmp_path):
    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    hf_cache(tmp_path / "hub", REPO, COMMIT, FILE, DATA)
    other = b"not on hugging face"
    store = tmp_path / "volume"
    blob = store / "sha256" / hashlib.sha256(other).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(other)
    placed = hfcache.place(replace(settings(tmp_path, lock, tmp_path / "hub"), models_dir=store))
    assert placed.missing == [] and placed.elsewhere == {KEY_OTHER: f"volume {blob}"}
    assert (tmp_path / "state" / "models" / KEY_OTHER).resolve() == blob


# ------------------------------------------------------------------ deploy --models cached
@pytest.fixture
def v2(tmp_path, monkeypatch):
    srv = RunPodV2(KEY)
    monkeypatch.setenv("RUNPOD_API_V2_URL", srv.url)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    root = tmp_path / "proj"
    big, small = DATA * 4, DATA
    write_lock(root, {
        "checkpoints/big.safetensors": hf_locked("acme/big-model", COMMIT, "big.safetensors", big),
        "loras/small.safetensors": hf_locked("acme/small-lora", NEWER, "small.safetensors", small),
        "vae/other.bin": {"original": {"url": "https://example.com/other.bin"},
                          "locked": {"url": "https://example.com/other.bin", "sha256": "0" * 64, "size": 3}}})
    monkeypatch.setenv("COMFYVER_ROOT", str(root))
    monkeypatch.chdir(root)
    yield srv
    srv.close()


def test_deploy_models_cached_records_the_placement_and_names_the_repository_to_cache(v2, capsys):
    rc = main(["deploy", "demo", "--image", IMG1, "--create", "prod", "--gpu-pool", "ADA_24", "--models", "cached",
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0, res
    ep = v2.endpoints[res["endpointId"]]
    assert ep["env"]["COMFY_MODELS"] == "cached" and ep["env"]["COMFY_HF_CACHED_MODEL"] == "acme/big-model"
    # one cached model per endpoint: the repository with the most bytes; the rest must come another way
    assert res["models"] == {"placement": "cached", "model": "acme/big-model", "revisions": [COMMIT],
                             "cached": ["checkpoints/big.safetensors"], "cachedBytes": len(DATA) * 4,
                             "elsewhere": ["loras/small.safetensors", "vae/other.bin"]}
    post = next(r for r in v2.requests if r.method == "POST")
    assert schema_errors(DOC, "CreateEndpointRequest", post.body) == []

    # an update says it in words: what to set in the console (the API has no field for it), and what goes elsewhere
    assert main(["deploy", "demo", "--image", IMG1, "--endpoint", res["endpointId"], "--models", "cached"]) == 0
    out = capsys.readouterr().out
    assert "models: cached (COMFY_MODELS in the endpoint's env)" in out
    assert "Edit Endpoint > Model): acme/big-model (revision 111111111111" in out
    assert "REST API v2 has no field for it" in out
    assert "loras/small.safetensors, vae/other.bin" in out and "comfyver models sync demo" in out

    # another placement takes it back: the cached repository is cleared
    assert main(["deploy", "demo", "--image", IMG1, "--endpoint", res["endpointId"], "--models", "volume"]) == 0
    capsys.readouterr()
    env_now = v2.endpoints[res["endpointId"]]["env"]
    assert env_now["COMFY_MODELS"] == "volume" and env_now["COMFY_HF_CACHED_MODEL"] == ""


def test_the_link_is_to_the_verified_file_and_odd_refs_and_old_links_do_not_matter(tmp_path):
    """ComfyUI reads the very file whose sha256 was checked (a snapshot entry retargeted afterwards changes
    nothing); a ref that is not text is skipped, not a crash; a link an earlier lock left is removed."""
    from handler import hfcache

    lock = demo_lock(tmp_path / "proj")
    snap = hf_cache(tmp_path / "hub", REPO, COMMIT, FILE, DATA)
    (snap.parents[2].parent / "refs" / "odd").write_bytes(b"\xff\xfe not utf-8")
    stale = tmp_path / "state" / "models" / "loras" / "old.safetensors"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(snap)
    placed = hfcache.place(settings(tmp_path, lock, tmp_path / "hub"))
    link = placed.links / KEY_HF
    assert Path(os.readlink(link)) == snap.resolve()
    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"evil")
    snap.unlink()
    snap.symlink_to(evil)  # retargeted after the check
    assert link.read_bytes() == DATA
    assert not stale.is_symlink()  # not a model of this lock: ComfyUI must not list it
