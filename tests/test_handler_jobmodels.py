"""Per-job models by URL (job input `models`, handler/jobmodels.py): a job brings a LoRA-like file, the real
worker (`python -m handler` on the CPU ComfyUI) downloads it once, verifies its sha256, shows it to that job's
workflow only, and a second job reuses it; bad digests, hostile names and an over-full store are refused."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests

from handler import jobmodels
from handler.errors import JobError
from handler.settings import Settings
from tests.handler import env
from tests.support.httpserver import HTTPServer
from tests.support.jobqueue import JobQueue, handler_worker

BOUND = 10_000  # bytes: COMFY_JOB_MODELS_MAX_GB of the worker below


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-files")
    srv = HTTPServer(root)
    srv.files_root = root
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, files):
    base = tmp_path_factory.mktemp("jobmodels-worker")
    home = env.comfy_tree(base)
    q = JobQueue()
    wenv = {"COMFY_HOME": str(home), "COMFY_PORT": str(env.free_port()), "OUTPUT_MODE": "base64",
            "COMFYUI_STATE_DIR": str(base / "state"), "ALLOWED_FETCH_HOSTS": "127.0.0.1",
            "COMFY_JOB_MODELS_DIR": str(base / "store"), "COMFY_JOB_MODELS_MAX_GB": str(BOUND / 1e9)}
    with handler_worker(q, wenv, base / "worker.log", "ep-models") as proc:
        q.proc, q.log_path, q.base = proc, base / "worker.log", base
        yield q
    q.close()


def submit(q: JobQueue, job_input: dict, timeout: float = 240) -> dict:
    """A job through RunPod's queue to the worker; its final status record (output or a decoded error)."""
    job_id = requests.post(f"{q.url}/v2/ep-models/run", json={"input": job_input}, timeout=10).json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = requests.get(f"{q.url}/v2/ep-models/status/{job_id}", timeout=10).json()
        if st["status"] in ("COMPLETED", "FAILED"):
            if isinstance(st.get("error"), str):
                st["error"] = json.loads(st["error"])
            return st
        assert q.proc.poll() is None, q.log_path.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("the job did not finish:\n" + q.log_path.read_text()[-3000:])


def digest_workflow(name: str) -> dict:
    return {"1": {"class_type": "ComfyverLoraDigest", "inputs": {"lora_name": name}}}


def downloads(srv: HTTPServer, path: str) -> int:
    return sum(1 for r in srv.requests if r["path"].split("?")[0] == path)


def stored(store: Path) -> set[str]:
    return {p.name for p in (store / "sha256").iterdir()} if (store / "sha256").is_dir() else set()


def links(state: Path) -> list[Path]:
    return [p for p in (state / "job-models-active").rglob("*") if p.is_symlink()]


# --- through the real worker --------------------------------------------------------------------------------
def test_a_job_brings_its_model_and_a_second_job_reuses_it(platform, files):
    data = os.urandom(3000)
    (files.files_root / "style.safetensors").write_bytes(data)
    model = {"folder": "loras", "name": "style.safetensors", "sha256": sha(data).upper(),  # hex in any case
             "url": f"{files.url}/style.safetensors?token=hunter2-secret-value"}
    st = submit(platform, {"workflow": digest_workflow("style.safetensors"), "models": [model]})
    assert st["status"] == "COMPLETED", st
    [text] = [o["text"] for o in st["output"]["outputs"] if o["kind"] == "text"]
    shown, digest, size = text.split()
    # the workflow read the job's bytes through ComfyUI's loras list, under this job's own name for them
    assert digest == sha(data) and size == "3000" and shown.endswith("-style.safetensors") and shown.startswith("job-")
    assert stored(platform.base / "store") == {sha(data)}
    assert links(platform.base / "state") == []  # shown for that job only

    st = submit(platform, {"workflow": digest_workflow("style.safetensors"), "models": [model]})
    assert st["status"] == "COMPLETED", st
    [text] = [o["text"] for o in st["output"]["outputs"] if o["kind"] == "text"]
    assert text.split()[1] == sha(data) and text.split()[0] != shown  # another job, another name
    assert downloads(files, "/style.safetensors") == 1  # the second job took it from the store

    # a job that does not bring it does not see it
    st = submit(platform, {"workflow": digest_workflow("style.safetensors")})
    assert st["status"] == "FAILED" and st["error"]["type"] == "validation", st
    assert "hunter2-secret-value" not in platform.log_path.read_text()


def test_a_wrong_sha256_is_refused_and_nothing_is_stored(platform, files):
    data = b"not the model you asked for" * 40
    (files.files_root / "bad.safetensors").write_bytes(data)
    want = sha(b"the model you asked for")
    st = submit(platform, {"workflow": digest_workflow("bad.safetensors"), "models": [
        {"folder": "loras", "name": "bad.safetensors", "url": f"{files.url}/bad.safetensors", "sha256": want}]})
    assert st["status"] == "FAILED", st
    e = st["error"]
    assert e["type"] == "input" and e["message"].startswith("models[0] (loras/bad.safetensors)")
    assert want in e["message"] and sha(data) in e["message"]
    assert (e["model"], e["expected_sha256"], e["actual_sha256"]) == ("bad.safetensors", want, sha(data))
    store = platform.base / "store"
    assert sha(data) not in stored(store) and want not in stored(store)
    assert list((store / "tmp").iterdir()) == []  # the bad bytes were dropped where they lay
    assert links(platform.base / "state") == []


@pytest.mark.parametrize("entry, field", [
    ({"folder": "loras", "name": "../../custom_nodes/x.py"}, "models[0].name"),
    ({"folder": "../custom_nodes", "name": "x.safetensors"}, "models[0].folder"),
])
def test_a_hostile_name_or_folder_is_refused_before_anything_is_fetched(platform, files, entry, field):
    before = len(files.requests)
    st = submit(platform, {"workflow": digest_workflow("x.safetensors"), "models": [
        {"url": f"{files.url}/x.safetensors", "sha256": "0" * 64, **entry}]})
    assert st["status"] == "FAILED" and st["error"]["type"] == "input", st
    assert st["error"]["message"].startswith(field + ":")
    assert len(files.requests) == before


# --- the store, the fetch rules and the per-job view, without ComfyUI ------------------------------------------
@pytest.fixture
def settings(tmp_path):
    return Settings(comfy_home=None, comfy_url=None, comfy_state_dir=tmp_path / "state",
                    allowed_fetch_hosts=["127.0.0.1"], job_models_dir=tmp_path / "store",
                    job_models_max_gb=3500 / 1e9)


def serve(srv, name: str, size: int) -> dict:
    data = os.urandom(size)
    (srv.files_root / name).write_bytes(data)
    return {"folder": "loras", "name": name, "url": f"{srv.url}/{name}", "sha256": sha(data)}


def use(settings, *models: dict) -> jobmodels.JobView:
    """A job's view of `models` (left open: the job is still running)."""
    view = jobmodels.JobView(settings)
    jobmodels.provide(view, jobmodels.parse(list(models), settings), settings)
    return view


def test_eviction_keeps_the_store_under_its_bound_least_recently_used_first(settings, http_server):
    a, b, c, d = (serve(http_server, f"{n}.safetensors", 1000) for n in "abcd")
    for m in (a, b, c):
        use(settings, m).close()
        time.sleep(0.02)
    use(settings, a).close()  # a used again: b is now the least recently used
    time.sleep(0.02)
    use(settings, d).close()
    store = settings.job_models_dir
    assert stored(store) == {a["sha256"], c["sha256"], d["sha256"]}
    assert sum(p.stat().st_size for p in (store / "sha256").iterdir()) <= 3500
    assert downloads(http_server, "/a.safetensors") == 1  # the second use of a came from the store


def test_a_model_a_running_job_uses_is_never_evicted(settings, http_server):
    a, b, c, d = (serve(http_server, f"{n}.safetensors", 1500) for n in "abcd")
    running = use(settings, a)  # oldest, but in use
    time.sleep(0.02)
    use(settings, b).close()
    time.sleep(0.02)
    use(settings, c).close()  # room for c: b goes, not a
    assert stored(settings.job_models_dir) == {a["sha256"], c["sha256"]}
    also = use(settings, c)
    with pytest.raises(JobError) as e:  # a and c held by running jobs: no room for d
        use(settings, d)
    assert e.value.kind == "input" and "COMFY_JOB_MODELS_MAX_GB" in (e.value.hint or "")
    assert stored(settings.job_models_dir) == {a["sha256"], c["sha256"]}
    assert list((settings.job_models_dir / "tmp").iterdir()) == []
    running.close()
    also.close()
    use(settings, d).close()  # once those jobs ended, the least recently used one makes room
    assert stored(settings.job_models_dir) == {c["sha256"], d["sha256"]}


def test_two_jobs_see_only_their_own_links_and_only_choices_are_pointed_at_them(settings, http_server):
    m = serve(http_server, "mine.safetensors", 500)
    one, two = use(settings, m), use(settings, m)
    assert one.shown["mine.safetensors"] != two.shown["mine.safetensors"]
    info = {"LoraLoader": {"input": {"required": {"lora_name": [["other.safetensors"]], "strength": ["FLOAT", {}]}}},
            "Note": {"input": {"required": {"text": ["STRING", {}]}}}}
    prompt = {"1": {"class_type": "LoraLoader", "inputs": {"lora_name": "mine.safetensors", "strength": 1.0}},
              "2": {"class_type": "Note", "inputs": {"text": "mine.safetensors"}}}
    one.point(prompt, info)
    assert prompt["1"]["inputs"]["lora_name"] == one.shown["mine.safetensors"]
    assert prompt["2"]["inputs"]["text"] == "mine.safetensors"  # a text is never rewritten
    folder = settings.state_dir / "job-models-active" / "loras"
    assert {p.name for p in folder.iterdir()} == {one.shown["mine.safetensors"], two.shown["mine.safetensors"]}
    one.close()
    assert {p.name for p in folder.iterdir()} == {two.shown["mine.safetensors"]}
    assert (folder / two.shown["mine.safetensors"]).read_bytes() == (http_server.files_root / "mine.safetensors").read_bytes()
    two.close()
    assert list(folder.iterdir()) == []  # files only: the folder ComfyUI listed stays


def test_fetch_rules_apply_private_addresses_size_cap(settings, http_server):
    m = serve(http_server, "big.safetensors", 4000)  # over the 3500-byte bound
    with pytest.raises(JobError) as e:
        use(settings, m)
    assert e.value.message.startswith("models[0].url:") and "larger than 3500 bytes" in e.value.message
    assert stored(settings.job_models_dir) == set() and list((settings.job_models_dir / "tmp").iterdir()) == []
    from dataclasses import replace
    strict = replace(settings, allowed_fetch_hosts=[])
    before = len(http_server.requests)
    with pytest.raises(JobError, match=r"models\[0\]\.url: host '127.0.0.1' resolves to a non-public address"):
        use(strict, serve(http_server, "small.safetensors", 10))
    assert len(http_server.requests) == before


OK = {"folder": "loras", "name": "x.safetensors", "url": "https://example.com/x.safetensors", "sha256": "a" * 64}


@pytest.mark.parametrize("models, message", [
    ("x", "models: expected a list"),
    ([OK, "x"], "models[1]: expected an object"),
    ([{**OK, "path": "/etc"}], "models[0]: unknown field(s) 'path'"),
    ([{k: v for k, v in OK.items() if k != "sha256"}], "models[0].sha256: missing"),
    ([{**OK, "folder": "custom_nodes"}], "models[0].folder: 'custom_nodes' is not one of ComfyUI's model folders"),
    ([{**OK, "folder": "loras/../.."}], "models[0].folder:"),
    ([{**OK, "name": "/etc/passwd"}], "models[0].name: file name"),
    ([{**OK, "name": "sub/x.safetensors"}], "models[0].name: file name"),
    ([{**OK, "name": ".hidden"}], "models[0].name: file name"),
    ([{**OK, "name": "x\n.safetensors"}], "models[0].name: file name"),
    ([{**OK, "name": "a..b.safetensors"}], "models[0].name: file name"),
    ([{**OK, "url": "file:///etc/passwd"}], "models[0].url: expected an http:// or https:// URL"),
    ([{**OK, "url": 5}], "models[0].url:"),
    ([{**OK, "sha256": "abc"}], "models[0].sha256: expected the file's sha256 as 64 hex digits"),
    ([{**OK, "sha256": "g" * 64}], "models[0].sha256:"),
    ([OK, OK, {**OK, "sha256": None}], "models[1]: loras/x.safetensors is given twice"),
    ([OK] * 33, "models: 33 models; at most 32"),
])
def test_every_field_is_checked_and_named(settings, models, message):
    with pytest.raises(JobError) as e:
        jobmodels.parse(models, settings)
    assert e.value.kind == "input" and e.value.message.startswith(message), e.value.message


def test_an_attached_worker_refuses_models_it_cannot_show(settings):
    from dataclasses import replace
    with pytest.raises(JobError, match="COMFY_URL"):
        jobmodels.parse([OK], replace(settings, comfy_url="http://127.0.0.1:1"))
    assert jobmodels.parse(None, settings) == [] and jobmodels.parse([], settings) == []


def test_the_store_defaults_to_the_network_volume_when_one_is_mounted(settings, tmp_path, monkeypatch):
    from dataclasses import replace
    s = replace(settings, job_models_dir=None)
    monkeypatch.setattr(jobmodels, "VOLUME", tmp_path / "no-volume")
    assert jobmodels.store_dir(s) == settings.state_dir / "job-models"
    (tmp_path / "volume").mkdir()
    monkeypatch.setattr(jobmodels, "VOLUME", tmp_path / "volume")
    assert jobmodels.store_dir(s) == tmp_path / "volume" / "comfyver" / "job-models"
    assert jobmodels.store_dir(settings) == tmp_path / "store"


@pytest.mark.parametrize("stray", ["link", "folder", "fifo"])
def test_a_stray_entry_under_a_models_digest_is_removed_never_followed_linked_or_waited_on(settings, http_server,
                                                                                           tmp_path, stray):
    """Only the store writes sha256/<hex>, and only regular files; anything else there (a link to another file, a
    folder, a FIFO that would block an open while the store's lock is held) is removed and the model downloaded."""
    a, b = (serve(http_server, f"{n}.safetensors", 1000) for n in "ab")
    blobs = settings.job_models_dir / "sha256"
    blobs.mkdir(parents=True)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not a model")
    for m in (a, b):  # b's entry is the least recently used one when eviction runs
        entry = blobs / m["sha256"]
        {"link": lambda e: e.symlink_to(secret), "folder": lambda e: e.mkdir(),
         "fifo": lambda e: os.mkfifo(e)}[stray](entry)
    view = use(settings, a)  # pin: the stray a is removed, a downloaded
    try:
        target = Path(os.readlink(next(iter(links(settings.state_dir)))))
        assert target == blobs / a["sha256"] and target.is_file() and not target.is_symlink()
        assert sha(target.read_bytes()) == a["sha256"]
    finally:
        view.close()
    use(settings, serve(http_server, "c.safetensors", 3000)).close()  # eviction walks past the stray b
    assert secret.read_bytes() == b"not a model"
    assert all(p.is_file() and not p.is_symlink() for p in blobs.iterdir())
