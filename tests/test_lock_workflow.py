"""`comfyver lock <id> --workflow W...` against real local git and HTTP servers."""

from __future__ import annotations

import hashlib
import json
import socket
import tomllib
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.lock import nodemap

from tests.support.gitserver import make_repo

FIX = Path(__file__).parent / "fixtures" / "workflows"

SMALL_CORE = {
    "nodes.py": (
        "import folder_paths\n"
        "class CheckpointLoaderSimple:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        return {'required': {'ckpt_name': (folder_paths.get_filename_list('checkpoints'),)}}\n"
        "class LoraLoader:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        return {'required': {'model': ('MODEL',), 'lora_name': (folder_paths.get_filename_list('loras'),),\n"
        "                             'strength_model': ('FLOAT', {})}}\n"
        "class KSampler: pass\n"
        "class SaveImage: pass\n"
        "NODE_CLASS_MAPPINGS = {'CheckpointLoaderSimple': CheckpointLoaderSimple, 'LoraLoader': LoraLoader,\n"
        "                       'KSampler': KSampler, 'SaveImage': SaveImage}\n"),
    "requirements.txt": "numpy\n",
}

PACK_A = {
    "__init__.py": (
        "import folder_paths\n"
        "class SamLoader:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(cls):\n"
        "        return {'required': {'model_name': (folder_paths.get_filename_list('sams'),)}}\n"
        "class FancyBlur: pass\n"
        "NODE_CLASS_MAPPINGS = {'FancySAMLoader': SamLoader, 'FancyBlur': FancyBlur}\n"),
    "requirements.txt": "opencv-python\ncomfy\n",
}
PACK_B = {"__init__.py": "class T: pass\nNODE_CLASS_MAPPINGS = {'SharedText': T}\n"}
PACK_C = {"__init__.py": "class T: pass\nNODE_CLASS_MAPPINGS = {'SharedText': T, 'OnlyInC': T}\n"}


@pytest.fixture
def env(tmp_path, git_server, http_server, monkeypatch):
    """A project, a small ComfyUI core, three node packs, model files and a ComfyUI-Manager data folder."""
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "127.0.0.1")  # the local file server plays a public host
    root = tmp_path / "proj"
    (root / "versions").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='p'\n")
    ns = type("Env", (), {})()
    ns.root, ns.http, ns.git_server = root, http_server, git_server
    make_repo(tmp_path / "core", SMALL_CORE, "core", tag="v0.3.75")
    ns.core = git_server.publish(tmp_path / "core", "ComfyUI")
    for name, files in (("ComfyUI-Fancy", PACK_A), ("ComfyUI-B", PACK_B), ("ComfyUI-C", PACK_C)):
        make_repo(tmp_path / name, files, "p", tag="v1.0.0")
    ns.pack_a, ns.pack_b, ns.pack_c = (git_server.publish(tmp_path / n, n) for n in ("ComfyUI-Fancy", "ComfyUI-B", "ComfyUI-C"))
    ns.files = {}
    for fname in ("base.safetensors", "detail.safetensors", "sam_b.pth"):
        data = hashlib.sha256(fname.encode()).digest() * 500
        (http_server.files_root / fname).write_bytes(data)
        ns.files[fname] = (f"{http_server.url}/{fname}", hashlib.sha256(data).hexdigest())
    mgr = tmp_path / "manager"
    mgr.mkdir()
    (mgr / "extension-node-map.json").write_text(json.dumps({
        ns.pack_a: [["FancyBlur", "FancySAMLoader"], {"title_aux": "Fancy"}],
        ns.pack_b: [["SharedText"], {"title_aux": "B"}],
        ns.pack_c: [["SharedText", "OnlyInC"], {"title_aux": "C"}],
    }))
    (mgr / "custom-node-list.json").write_text(json.dumps({"custom_nodes": []}))
    (mgr / "model-list.json").write_text(json.dumps({"models": [
        {"filename": "detail.safetensors", "url": ns.files["detail.safetensors"][0], "save_path": "loras"}]}))
    monkeypatch.setenv("COMFYVER_MANAGER_DATA", str(mgr))
    nodemap.manager.cache_clear()
    monkeypatch.chdir(root)
    ns.workflow = tmp_path / "flow.json"
    ns.workflow.write_text(json.dumps(ui_workflow(ns)))
    yield ns
    nodemap.manager.cache_clear()


def ui_workflow(ns) -> dict:
    url, sha = ns.files["base.safetensors"]
    return {"nodes": [
        {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["sd/base.safetensors"],
         "properties": {"cnr_id": "comfy-core", "models": [{"name": "base.safetensors", "url": url,
                                                            "hash": sha, "hash_type": "SHA256",
                                                            "directory": "checkpoints"}]}},
        {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["detail.safetensors", 1.0]},
        {"id": 3, "type": "FancySAMLoader", "mode": 0, "widgets_values": ["sam_b.pth"]},
        {"id": 4, "type": "FancyBlur", "mode": 4, "widgets_values": []},
        {"id": 5, "type": "SharedText", "mode": 0, "widgets_values": ["hi"]},
        {"id": 6, "type": "Note", "mode": 0, "widgets_values": ["just a note"]},
        {"id": 7, "type": "KSampler", "mode": 0, "widgets_values": [1, "fixed", 20]},
        {"id": 8, "type": "OnlyInC", "mode": 2, "widgets_values": []},  # muted: its pack is not locked
    ], "links": []}


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    o = capsys.readouterr()
    return rc, o.out, o.err


def base_args(ns, vid="demo"):
    return ["lock", vid, "--workflow", str(ns.workflow), "--comfyui-url", ns.core, "--comfyui-ref", "v0.3.75",
            "--offline-registry", "--no-python", "--json"]


def test_lock_reports_every_missing_item_with_its_fix_and_writes_nothing(env, capsys):
    rc, out, _ = run(capsys, *base_args(env))
    assert rc == 1
    res = json.loads(out)
    items = {p["item"]: p for p in res["problems"]}
    # SharedText is provided by two packs: reported with both candidates and the flag that decides
    assert set(items) == {"class SharedText"}
    assert "comfyui-b" in items["class SharedText"]["problem"] and "comfyui-c" in items["class SharedText"]["problem"]
    assert "--choose 'SharedText=" in items["class SharedText"]["fix"]
    assert not (env.root / "versions" / "demo").exists()
    # the lock stopped on a class, before its models step: still, every model value it saw is named, with the
    # source known so far (the workflow's own entry, ComfyUI-Manager's list) or none
    # (FancySAMLoader's folder is known once its pack is locked and scanned: `?/` until then)
    seen = {m["model"]: m for m in res["models"]}
    assert set(seen) == {"checkpoints/sd/base.safetensors", "loras/detail.safetensors", "?/sam_b.pth"}, seen
    assert seen["checkpoints/sd/base.safetensors"]["source"] == "workflow"
    assert seen["loras/detail.safetensors"]["url"] == env.files["detail.safetensors"][0]
    assert seen["?/sam_b.pth"]["url"] is None and seen["?/sam_b.pth"]["demanded"]
    rc, out, _ = run(capsys, *[a for a in base_args(env) if a != "--json"])
    assert rc == 1 and "model ?/sam_b.pth: no source yet" in out


def test_lock_then_model_without_source_is_named_with_its_flag(env, capsys):
    rc, out, _ = run(capsys, *base_args(env), "--choose", "SharedText=comfyui-b")
    assert rc == 1
    probs = json.loads(out)["problems"]
    assert [p["item"] for p in probs] == ["model sams/sam_b.pth"]
    assert probs[0]["fix"].startswith("--model 'sams/sam_b.pth=")
    assert not (env.root / "versions" / "demo").exists()


def test_lock_end_to_end(env, capsys):
    sam_url, sam_sha = env.files["sam_b.pth"]
    rc, out, err = run(capsys, *base_args(env), "--choose", "SharedText=comfyui-b",
                       "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 0, out + err
    # it says what it placed where, and why
    assert json.loads(out)["knowledge"] == "scan"  # says which node knowledge it used
    assert any("comfyver probe demo" in n for n in json.loads(out)["notes"])
    placed = {m["model"]: m for m in json.loads(out)["placed"]}
    assert placed["sams/sam_b.pth"]["source"] == "--model" and placed["sams/sam_b.pth"]["url"] == sam_url
    assert any("LoraLoader.lora_name" in u for u in placed["loras/detail.safetensors"]["used_by"])
    vdir = env.root / "versions" / "demo"
    lock = lockfile.read(vdir / "version.json")
    assert lock["choices"] == {"SharedText": "comfyui-b"}
    assert set(lock["nodes"]) == {"comfyui-fancy", "comfyui-b"}
    # provides comes from scanning the locked pack, not only from what the workflow used
    assert lock["nodes"]["comfyui-fancy"]["provides"] == ["FancyBlur", "FancySAMLoader"]
    assert lock["nodes"]["comfyui-fancy"]["locked"]["url"] == env.pack_a
    assert set(lock["models"]) == {"checkpoints/sd/base.safetensors", "loras/detail.safetensors", "sams/sam_b.pth"}
    assert lock["models"]["checkpoints/sd/base.safetensors"]["locked"]["sha256"] == env.files["base.safetensors"][1]
    assert lock["models"]["checkpoints/sd/base.safetensors"]["original"]["sha256"] == env.files["base.safetensors"][1]
    assert lock["models"]["loras/detail.safetensors"]["original"]["url"] == env.files["detail.safetensors"][0]
    assert lock["models"]["sams/sam_b.pth"]["locked"]["sha256"] == sam_sha
    assert lock["workflows"] == ["workflows/flow.json"]
    assert (vdir / "workflows" / "flow.json").read_bytes() == env.workflow.read_bytes()
    # analyze against the version: everything covered, nothing unresolved
    rc, out, _ = run(capsys, "analyze", str(env.workflow), "--version", "demo", "--offline", "--json")
    rep = json.loads(out)
    assert rc == 0 and rep["unresolved"] == {} and rep["ambiguous"] == {}
    assert sorted(n for n, p in rep["nodes"].items() if p["active"]) == ["comfyui-b", "comfyui-fancy"]
    assert rep["nodes"]["comfyui-c"]["active"] is False  # only a muted node uses it
    # locking again is a no-op for inputs already locked
    requests_before = len(env.http.requests)
    rc, _, err = run(capsys, *base_args(env), "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 2 and "only apply to a new version" in err  # an existing version keeps its ComfyUI
    rc, out, _ = run(capsys, "lock", "demo", "--workflow", str(env.workflow), "--offline-registry", "--no-python",
                     "--json", "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 0 and json.loads(out)["added_models"] == [] and json.loads(out)["added_nodes"] == []
    assert len(env.http.requests) == requests_before
    # ... and the model source given once is taken from the lock, no --model needed again
    rc, out, err = run(capsys, "lock", "demo", "--workflow", str(env.workflow), "--offline-registry", "--no-python",
                       "--json")
    assert rc == 0, out + err
    assert json.loads(out)["added_models"] == [] and len(env.http.requests) == requests_before
    assert "tests_written" not in json.loads(out) and not (vdir / "tests").exists()  # only when asked
    # --write-tests: a first test per workflow, kept on the next run
    rc, out, err = run(capsys, "lock", "demo", "--offline-registry", "--no-python", "--json", "--write-tests")
    assert rc == 0 and json.loads(out)["tests_written"] == ["tests/flow.json"], out + err
    assert json.loads((vdir / "tests/flow.json").read_text())["input"] == {"workflow": "flow.json"}
    rc, out, err = run(capsys, "lock", "demo", "--offline-registry", "--no-python", "--write-tests")
    assert rc == 0 and "test kept: versions/demo/tests/flow.json" in out, out + err


def test_lock_names_failed_downloads(env, capsys):
    rc, out, _ = run(capsys, *base_args(env), "--choose", "SharedText=comfyui-b",
                     "--model", f"sams/sam_b.pth={env.http.url}/missing.pth")
    assert rc == 1
    probs = {p["item"]: p for p in json.loads(out)["problems"]}
    assert "models.sams/sam_b.pth" in probs and "404" in probs["models.sams/sam_b.pth"]["problem"]
    assert not (env.root / "versions" / "demo").exists()


def test_lock_with_explicit_node_resolves_class_through_its_scan(env, capsys, tmp_path):
    wf = tmp_path / "api.json"
    wf.write_text(json.dumps({"1": {"class_type": "OnlyInC", "inputs": {}},
                              "2": {"class_type": "SharedText", "inputs": {"text": "x"}}}))
    rc, out, err = run(capsys, "lock", "d2", "--workflow", str(wf), "--node", f"{env.pack_c}@v1.0.0",
                       "--comfyui-url", env.core, "--offline-registry", "--no-python", "--json")
    assert rc == 0, out + err
    lock = lockfile.read(env.root / "versions" / "d2" / "version.json")
    assert list(lock["nodes"]) == ["comfyui-c"]
    assert lock["nodes"]["comfyui-c"]["original"] == {"type": "git", "url": env.pack_c, "ref": "v1.0.0"}


def test_lock_writes_python_lock_with_fixups(env, capsys):
    """Real `uv lock` (PyPI metadata through uv): pyproject from core + node, every wheel hashed."""
    sam_url, _ = env.files["sam_b.pth"]
    args = [a for a in base_args(env) if a != "--no-python"]
    rc, out, err = run(capsys, *args, "--choose", "SharedText=comfyui-b", "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 0, out + err
    vdir = env.root / "versions" / "demo"
    py = tomllib.loads((vdir / "pyproject.toml").read_text())
    deps = py["project"]["dependencies"]
    assert "numpy" in deps and "opencv-python-headless" in deps and "comfy" not in deps
    assert "opencv-python; sys_platform == 'never'" in py["tool"]["uv"]["override-dependencies"]
    uvlock = tomllib.loads((vdir / "uv.lock").read_text())
    pkgs = {p["name"]: p for p in uvlock["package"]}
    assert "opencv-python-headless" in pkgs and "opencv-python" not in pkgs and "comfy" not in pkgs
    wheels = [w for p in pkgs.values() for w in p.get("wheels", [])]
    assert wheels and all(w["hash"].startswith("sha256:") for w in wheels)
    notes = json.loads(out)["notes"]
    assert any("stray package 'comfy'" in n and "comfyui-fancy" in n for n in notes)


def test_lock_refuses_escaping_model_names_and_secret_urls(env, capsys, tmp_path):
    wf = tmp_path / "evil.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["../../../etc/evil.safetensors"]},
        {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["ok.safetensors", 1.0],
         "properties": {"models": [{"name": "ok.safetensors", "directory": "loras",
                                    "url": f"{env.http.url}/ok.safetensors?token=hf_SECRET123"}]}}]}))
    rc, out, _ = run(capsys, "lock", "evil", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python", "--json")
    assert rc == 1
    probs = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert "'..'" in probs["model checkpoints/../../../etc/evil.safetensors"]
    assert "secret query parameter 'token'" in probs["model loras/ok.safetensors"]
    assert "hf_SECRET123" not in out
    assert not (env.root / "versions" / "evil").exists()


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/shadow", "may not name a file:// source"),
    ("gs://bucket/m.safetensors", "may not name a gs:// source"),
    ("http://127.0.0.1:9/m.safetensors", "local or private host"),
    ("http://localhost:9/m.safetensors", "local or private host"),
    ("http://10.1.2.3/m.safetensors", "local or private host"),
    ("http://[::1]:9/m.safetensors", "local or private host"),
])
def test_workflow_content_cannot_name_local_sources(env, capsys, tmp_path, monkeypatch, url, needle):
    """A downloaded workflow's properties.models must not make lock read a local file or this network."""
    monkeypatch.delenv("COMFYVER_TRUSTED_HOSTS")
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"private")
    secret.chmod(0o600)
    url = url.replace("/etc/shadow", str(secret))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["m.safetensors", 1.0],
         "properties": {"models": [{"name": "m.safetensors", "directory": "loras", "url": url}]}}]}))
    rc, out, _ = run(capsys, "lock", "local", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python", "--json")
    assert rc == 1
    probs = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert needle in probs["model loras/m.safetensors"]
    assert not (env.root / "versions" / "local").exists()
    assert not list((tmp_path / "cache").rglob("sha256/*")) if (tmp_path / "cache").exists() else True


def test_lock_registry_pack_from_cnr_id(env, capsys, tmp_path, monkeypatch):
    """A node saved with properties.cnr_id + a release ver is locked from the Comfy Registry at that version."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rgthree-comfy/__init__.py", "NODE_CLASS_MAPPINGS = {'Seed (rgthree)': object, 'Other (rgthree)': object}\n")
        z.writestr("rgthree-comfy/requirements.txt", "rich\n")
    (env.http.files_root / "rg.zip").write_bytes(buf.getvalue())
    env.http.routes["/nodes/rgthree-comfy/versions/1.0.2"] = {
        "id": "x", "version": "1.0.2", "downloadUrl": f"{env.http.url}/rg.zip", "deprecated": False}
    monkeypatch.setenv("COMFY_REGISTRY_URL", env.http.url)
    wf = tmp_path / "rg.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "Seed (rgthree)", "mode": 0, "widgets_values": [1],
                                         "properties": {"cnr_id": "rgthree-comfy", "ver": "1.0.2"}}]}))
    rc, out, err = run(capsys, "lock", "rg", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json")
    assert rc == 0, out + err
    node = lockfile.read(env.root / "versions" / "rg" / "version.json")["nodes"]["rgthree-comfy"]
    assert node["original"] == {"type": "registry", "id": "rgthree-comfy", "version": "1.0.2"}
    assert node["locked"]["type"] == "zip" and node["locked"]["stripRoot"] is True
    assert node["provides"] == ["Other (rgthree)", "Seed (rgthree)"]


def test_lock_refuses_two_workflows_with_one_name(env, capsys, tmp_path):
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "flow.json"
    twin.write_text(env.workflow.read_text())
    sam_url, _ = env.files["sam_b.pth"]
    rc, _, err = run(capsys, *base_args(env), "--workflow", str(twin), "--choose", "SharedText=comfyui-b",
                     "--model", f"sams/sam_b.pth={sam_url}")
    assert rc == 2 and "would both be saved as" in err
    assert not (env.root / "versions" / "demo").exists()


def _workflow_naming(tmp_path, url):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["m.safetensors", 1.0],
         "properties": {"models": [{"name": "m.safetensors", "directory": "loras", "url": url}]}}]}))
    return wf


def test_workflow_source_cannot_redirect_to_this_machine(env, capsys, tmp_path, monkeypatch):
    """A public-looking source that answers with a redirect to 127.0.0.1 is refused at that hop."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "mirror.test" else host, *a, **k))
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "mirror.test")  # the first hop is allowed, the second is not
    port = env.http.url.rsplit(":", 1)[1]
    env.http.routes["/m.safetensors"] = lambda h, b: (302, {"Location": f"http://127.0.0.1:{port}/base.safetensors"}, b"")
    wf = _workflow_naming(tmp_path, f"http://mirror.test:{port}/m.safetensors")
    rc, out, _ = run(capsys, "lock", "redir", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python", "--json")
    assert rc == 1
    probs = json.dumps(json.loads(out)["problems"])
    assert "local or private" in probs
    assert not any(r["path"] == "/base.safetensors" for r in env.http.requests)
    assert not (env.root / "versions" / "redir").exists()


def test_the_lock_marks_what_a_workflow_named_and_update_refetches_it_hop_checked(env, capsys, tmp_path, monkeypatch):
    """A model source read from a workflow is recorded as `from: workflow` (one given with --model is not), and
    `update` re-resolves it as `lock` did: a redirect to this machine is refused at that hop (issue 24 L1)."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "mirror.test" else host, *a, **k))
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "mirror.test")
    port = env.http.url.rsplit(":", 1)[1]
    wf = _workflow_naming(tmp_path, f"http://mirror.test:{port}/base.safetensors")
    rc, out, err = run(capsys, "lock", "marks", "--workflow", str(wf), "--comfyui-url", env.core,
                       "--offline-registry", "--no-python", "--json",
                       "--model", f"loras/given.safetensors={env.files['detail.safetensors'][0]}")
    assert rc == 0, out + err
    models = lockfile.read(env.root / "versions" / "marks" / "version.json")["models"]
    assert models["loras/m.safetensors"]["from"] == "workflow"
    assert "from" not in models["loras/given.safetensors"]
    env.http.routes["/base.safetensors"] = lambda h, b: (302, {"Location": f"http://127.0.0.1:{port}/sam_b.pth"}, b"")
    before = len(env.http.requests)
    rc, out, err = run(capsys, "update", "marks", "loras/m.safetensors", "--json")
    assert rc == 1 and "local or private" in out + err
    assert not any(r["path"] == "/sam_b.pth" for r in env.http.requests[before:])
    assert lockfile.read(env.root / "versions" / "marks" / "version.json")["models"] == models


def test_workflow_source_cannot_rebind_dns_to_this_machine(env, capsys, tmp_path, monkeypatch):
    """The name is public when checked and private when connected (DNS rebinding): the connection is refused."""
    real = socket.getaddrinfo
    answers = {"n": 0}

    def rebinding(host, *a, **k):
        if host == "rebind.test":
            answers["n"] += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34" if answers["n"] == 1 else "127.0.0.1", 0))]
        return real(host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.delenv("COMFYVER_TRUSTED_HOSTS")
    port = env.http.url.rsplit(":", 1)[1]
    wf = _workflow_naming(tmp_path, f"http://rebind.test:{port}/base.safetensors")
    before = len(env.http.requests)
    rc, out, _ = run(capsys, "lock", "rebind", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python", "--json")
    assert rc == 1
    assert answers["n"] >= 2  # checked once by name, refused again at connect time
    assert "local or private" in json.dumps(json.loads(out)["problems"])
    assert not any(r["path"] == "/base.safetensors" for r in env.http.requests[before:])


def test_a_class_the_pinned_pack_does_not_register_is_a_problem(env, capsys, tmp_path):
    """Evidence (here overrides.json) sends a class to a pack whose pinned tree lacks it: lock names the pack,
    its rev and the class instead of recording it in `provides` unchecked."""
    vdir = env.root / "versions" / "ov"
    vdir.mkdir()
    (vdir / "overrides.json").write_text(json.dumps({"classes": {"NotInB": env.pack_b}}))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "NotInB", "mode": 0, "widgets_values": []}]}))
    rc, out, _ = run(capsys, "lock", "ov", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python", "--json")
    assert rc == 1
    probs = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert "does not register 'NotInB'" in probs["class NotInB"] and "comfyui-b at " in probs["class NotInB"]
    assert not (vdir / "version.json").exists()


def _github_alias(env, monkeypatch, owner_repo: str, work: Path) -> None:
    """Serve the work repo as https://github.com/<owner_repo> through git's insteadOf, as a user's GitHub would be."""
    env.git_server.publish(work, owner_repo)
    (env.git_server.root / owner_repo).symlink_to(Path(owner_repo).name + ".git")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.http://127.0.0.1:{env.git_server.port}/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/")


def test_a_saved_commit_the_repository_lost_falls_back_to_its_newest(env, capsys, tmp_path, monkeypatch):
    """The workflow saved the pack at a commit the repository no longer has (force-pushed): one lock still
    works, on the newest commit, and says so; a ref the user gave never falls back."""
    _github_alias(env, monkeypatch, "someone/ComfyUI-B", tmp_path / "ComfyUI-B")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SharedText", "mode": 0, "widgets_values": ["x"],
                                         "properties": {"aux_id": "someone/ComfyUI-B", "ver": "0" * 40}}]}))
    rc, out, err = run(capsys, "lock", "saved", "--workflow", str(wf), "--comfyui-url", env.core,
                       "--offline-registry", "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert any("saved it at " + "0" * 40 in n and "locked its newest instead" in n for n in res["notes"])
    node = lockfile.read(env.root / "versions" / "saved" / "version.json")["nodes"]["comfyui-b"]
    assert node["original"] == {"type": "git", "url": "https://github.com/someone/ComfyUI-B"}
    rc, out, _ = run(capsys, "lock", "given", "--workflow", str(wf), "--comfyui-url", env.core, "--node",
                     "https://github.com/someone/ComfyUI-B@" + "0" * 40, "--offline-registry", "--no-python", "--json")
    assert rc == 1 and "nodes.comfyui-b" in out


def test_registry_down_falls_back_to_the_packs_git_repository(env, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFY_REGISTRY_URL", "http://127.0.0.1:9")
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "custom-node-list.json").write_text(json.dumps({"custom_nodes": [{"id": "pack-b", "reference": env.pack_b}]}))
    nodemap.manager.cache_clear()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SharedText", "mode": 0, "widgets_values": ["x"],
                                         "properties": {"cnr_id": "pack-b", "ver": "1.2.0"}}]}))
    rc, out, err = run(capsys, "lock", "reg", "--workflow", str(wf), "--comfyui-url", env.core, "--no-python", "--json")
    assert rc == 0, out + err
    assert any("Comfy Registry could not give pack-b@1.2.0" in n and env.pack_b in n for n in json.loads(out)["notes"])
    node = lockfile.read(env.root / "versions" / "reg" / "version.json")["nodes"]["pack-b"]
    assert node["original"]["type"] == "git" and node["locked"]["url"] == env.pack_b


def test_registry_down_locks_the_saved_version_by_its_git_tag(env, capsys, tmp_path, monkeypatch):
    """The workflow saved pack-b at registry version 1.0.0 and its repository has the tag v1.0.0: the git fallback
    locks that tag, not the newest commit. Only the fallback is resolved a second time."""
    monkeypatch.setenv("COMFY_REGISTRY_URL", "http://127.0.0.1:9")
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "custom-node-list.json").write_text(json.dumps({"custom_nodes": [{"id": "pack-b", "reference": env.pack_b}]}))
    nodemap.manager.cache_clear()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 1, "type": "SharedText", "mode": 0, "widgets_values": ["x"],
         "properties": {"cnr_id": "pack-b", "ver": "1.0.0"}},
        {"id": 2, "type": "OnlyInC", "mode": 0}]}))
    from comfyver.sources import resolve
    calls, real = [], resolve.lock_one
    monkeypatch.setattr(resolve, "lock_one", lambda kind, original, what, *a: (calls.append(what),
                                                                             real(kind, original, what, *a))[1])
    rc, out, err = run(capsys, "lock", "tagged", "--workflow", str(wf), "--comfyui-url", env.core, "--no-python",
                       "--json")
    assert rc == 0, out + err
    assert any("pack-b@1.0.0" in n and "at tag v1.0.0" in n for n in json.loads(out)["notes"])
    node = lockfile.read(env.root / "versions" / "tagged" / "version.json")["nodes"]["pack-b"]
    assert node["original"] == {"type": "git", "url": env.pack_b, "ref": "v1.0.0"}
    assert calls.count("nodes.pack-b") == 2  # the registry, then its git repository
    assert calls.count("nodes.comfyui-c") == 1, calls  # resolved once: not again for pack-b's fallback


def test_a_model_is_pinned_without_a_download_when_sha256_and_size_are_given(env, capsys, tmp_path):
    """Hugging Face unreachable (offline): `--model K=hf://... --sha256 H --size N` records what is known,
    marked unverified; realize/fetch check the bytes later."""
    sha = "ab" * 32
    rc, out, err = run(capsys, *base_args(env, "pinned"), "--choose", "SharedText=comfyui-b",
                       "--model", "sams/sam_b.pth=hf://someone/sam@main/sam_b.pth", "--sha256", sha, "--size", "1234")
    assert rc == 0, out + err
    m = lockfile.read(env.root / "versions" / "pinned" / "version.json")["models"]["sams/sam_b.pth"]
    assert m["original"] == {"url": "hf://someone/sam@main/sam_b.pth", "sha256": sha, "size": 1234}
    assert m["locked"] == {"url": "https://huggingface.co/someone/sam/resolve/main/sam_b.pth", "sha256": sha,
                           "size": 1234, "unverified": True, "auth": "hf"}
    assert not any("sam" in r["path"] for r in env.http.requests)
    rc, _, err = run(capsys, *base_args(env, "pinned2"), "--model", "sams/x.pth=hf://a/b/x.pth", "--sha256", sha)
    assert rc == 2 and "both --sha256 and --size" in err
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error
        run(capsys, *base_args(env, "pinned3"), "--sha256", sha, "--model", "sams/x.pth=hf://a/b/x.pth")
    assert exc.value.code == 2 and "after the --model it belongs to" in capsys.readouterr().err


def test_an_unverified_pin_is_checked_when_the_bytes_arrive(env, capsys, tmp_path):
    """models sync (as fetch/realize) downloads a pinned-without-download model and checks sha256 and size:
    the right pin lands in the store, a wrong one is refused naming the model."""
    url, sha = env.files["sam_b.pth"]
    size = (env.http.files_root / "sam_b.pth").stat().st_size
    for vid, pin_sha in (("good", sha), ("bad", "cd" * 32)):
        rc, out, err = run(capsys, *base_args(env, vid), "--choose", "SharedText=comfyui-b",
                           "--model", f"sams/sam_b.pth={url}", "--sha256", pin_sha, "--size", str(size))
        assert rc == 0, out + err
    before = len(env.http.requests)
    assert len([r for r in env.http.requests if r["path"] == "/sam_b.pth"]) == 0  # nothing fetched at lock time
    rc, out, err = run(capsys, "models", "sync", "good", "--to", str(tmp_path / "store"))
    assert rc == 0, out + err
    assert (tmp_path / "store" / "sha256" / sha).stat().st_size == size
    rc, out, err = run(capsys, "models", "sync", "bad", "--to", str(tmp_path / "store2"))
    assert rc == 1 and "sam_b.pth" in err + out and "sha256" in (err + out).lower()
    assert len(env.http.requests) > before


def test_check_and_relock_agree_with_a_folder_given_by_model(env, capsys, tmp_path):
    """A model of a class whose scan shows no model input gets its folder from --model; `check` and a second
    `lock` (without --model) take that decision instead of asking for the command already run."""
    url, _ = env.files["sam_b.pth"]
    wf = tmp_path / "odd.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SharedText", "mode": 0, "widgets_values": ["sam_b.pth"]},
                                        {"id": 2, "type": "KSampler", "mode": 0, "widgets_values": [1]}]}))
    args = ["lock", "odd", "--workflow", str(wf), "--offline-registry", "--no-python", "--json",
            "--choose", "SharedText=comfyui-b"]
    rc, out, _ = run(capsys, *args, "--comfyui-url", env.core)
    probs = {p["item"]: p for p in json.loads(out)["problems"]}
    assert rc == 1 and "no folder known" in probs["model sam_b.pth"]["problem"]
    rc, out, err = run(capsys, *args, "--comfyui-url", env.core, "--model", f"sams/sam_b.pth={url}")
    assert rc == 0, out + err
    rc, out, err = run(capsys, "check", "odd", "--no-python", "--json")
    assert rc == 0, out + err
    rc, out, err = run(capsys, *args)  # again, without --model
    assert rc == 0 and json.loads(out)["added_models"] == [], out + err


def test_extra_python_requirements_are_kept_in_the_lock_and_pyproject(env, capsys):
    """A pack imports soundfile without listing it: `--pip` adds it to the lock and to the generated pyproject."""
    from comfyver.lock import pylock

    rc, out, err = run(capsys, *base_args(env, "pip"), "--choose", "SharedText=comfyui-b",
                       "--model", f"sams/sam_b.pth={env.files['sam_b.pth'][0]}", "--pip", "soundfile>=0.12",
                       "--pip", "SoundFile>=0.12.1", "--pip", "einops")
    assert rc == 0, out + err
    lock = lockfile.read(env.root / "versions" / "pip" / "version.json")
    assert lock["python"]["extra"] == ["SoundFile>=0.12.1", "einops"]  # one per package, the last one wins
    text, reqs, _ = pylock.generate(lock)
    assert '"soundfile>=0.12.1"' in text.lower() and '"einops"' in text
    assert any("python.extra" in w for w in reqs.who_requires("soundfile"))
    rc, _, err = run(capsys, *base_args(env, "pip2"), "--pip", "not a requirement!!")
    assert rc == 2 and "--pip 'not a requirement!!'" in err


def test_a_new_cuda_lock_targets_linux_only_unless_platforms_are_asked_for(env, capsys):
    """Issue 28: a CUDA profile locks Linux x86_64 only (a pack needing onnxruntime-gpu locks); --platform asks for
    more; the generated pyproject follows python.platforms."""
    from comfyver.lock import pylock

    common = ["--choose", "SharedText=comfyui-b", "--model", f"sams/sam_b.pth={env.files['sam_b.pth'][0]}"]
    rc, out, err = run(capsys, *base_args(env, "linux"), *common)
    assert rc == 0, out + err
    lock = lockfile.read(env.root / "versions" / "linux" / "version.json")
    assert lock["python"]["torch"] == "cu128" and lock["python"]["platforms"] == ["linux-x86_64"]
    envs = tomllib.loads(pylock.generate(lock)[0])["tool"]["uv"]["environments"]
    assert envs == ["sys_platform == 'linux' and platform_machine == 'x86_64'"]
    rc, out, err = run(capsys, *base_args(env, "both"), *common, "--platform", "macos-arm64",
                       "--platform", "linux-x86_64")
    assert rc == 0, out + err
    lock = lockfile.read(env.root / "versions" / "both" / "version.json")
    assert lock["python"]["platforms"] == ["linux-x86_64", "macos-arm64"]
    assert len(tomllib.loads(pylock.generate(lock)[0])["tool"]["uv"]["environments"]) == 2


def test_extra_node_versions_pin_the_pack_as_it_was_saved(env, capsys, tmp_path):
    """A workflow without per-node cnr_id/ver but with `extra.node_versions` gets its pack at that commit
    (here a commit newer than the newest release, which is what `latest` would give)."""
    saved = make_repo(tmp_path / "ComfyUI-B", {"README.md": "newer\n"}, "newer commit")
    env.git_server.publish(tmp_path / "ComfyUI-B", "ComfyUI-B")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "SharedText", "mode": 0, "widgets_values": ["x"]}],
                              "extra": {"node_versions": {"ComfyUI-B": saved, "comfy-core": "0.3.75"}}}))
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({env.pack_b: [["SharedText"], {}]}))
    nodemap.manager.cache_clear()
    rc, out, err = run(capsys, "lock", "nv", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json")
    assert rc == 0, out + err
    node = lockfile.read(env.root / "versions" / "nv" / "version.json")["nodes"]["comfyui-b"]
    assert node["locked"]["rev"] == saved and node["original"]["ref"] == saved
    # a pick the user made (--choose) is not overridden by a saved version: the newest release
    rc, out, err = run(capsys, "lock", "nv2", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json", "--choose", "SharedText=comfyui-b")
    assert rc == 0, out + err
    assert lockfile.read(env.root / "versions" / "nv2" / "version.json")["nodes"]["comfyui-b"]["locked"]["rev"] != saved


def test_an_unwired_class_named_only_in_a_packs_web_files_is_frontend_only(env, capsys, tmp_path):
    """A pack's JS-only node (registered by its web extension, never by Python) is wired to nothing and no map
    names it: lock notes it as that pack's frontend-only node instead of stopping; an unknown class that no
    locked pack's web files name still stops the lock."""
    make_repo(tmp_path / "ComfyUI-Fancy", {"web/ext.js": "app.registerNodeDef('FancyNoteWidget', {});\n"},
              "web widget", tag="v1.0.1")
    env.git_server.publish(tmp_path / "ComfyUI-Fancy", "ComfyUI-Fancy")
    nodes = [{"id": 1, "type": "FancyBlur", "mode": 0, "widgets_values": [],
              "outputs": [{"name": "IMAGE", "links": [1]}]},
             {"id": 2, "type": "SaveImage", "mode": 0, "widgets_values": ["x"], "inputs": [{"name": "images", "link": 1}]},
             {"id": 3, "type": "FancyNoteWidget", "mode": 0, "widgets_values": ["hello"]}]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": nodes, "links": [[1, 1, 0, 2, 0, "IMAGE"]]}))
    rc, out, err = run(capsys, "lock", "js", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json")
    assert rc == 0, out + err
    assert any("FancyNoteWidget" in n and "frontend-only node of comfyui-fancy" in n for n in json.loads(out)["notes"])
    rc, out, err = run(capsys, "check", "js", "--no-python", "--json")
    assert rc == 0, out + err  # check agrees with what lock decided
    wf.write_text(json.dumps({"nodes": nodes[:2] + [{"id": 3, "type": "NobodyKnowsMe", "mode": 0}],
                              "links": [[1, 1, 0, 2, 0, "IMAGE"]]}))
    rc, out, _ = run(capsys, "lock", "js2", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                     "--no-python", "--json")
    assert rc == 1 and "class NobodyKnowsMe" in {p["item"] for p in json.loads(out)["problems"]}
    assert not (env.root / "versions" / "js2" / "version.json").exists()


def test_a_model_key_no_workflow_uses_is_named(env, capsys):
    """A mistyped --model folder (lora/ for loras/) is locked but said (found by an outside review)."""
    rc, out, err = run(capsys, *base_args(env, "typo"), "--choose", "SharedText=comfyui-b",
                       "--model", f"sams/sam_b.pth={env.files['sam_b.pth'][0]}",
                       "--model", "lora/detail.safetensors=https://example.org/d.safetensors", "--sha256", "ab" * 32,
                       "--size", "3")
    assert rc == 0, out + err
    assert any(n.startswith("--model lora/detail.safetensors: no workflow of this version uses it")
               for n in json.loads(out)["notes"])


def test_a_trusted_endpoint_is_trusted_at_its_own_port_only(monkeypatch):
    """A local HF_ENDPOINT mirror does not open every port of its host to workflow sources (outside review)."""
    from comfyver.base import web
    from comfyver.sources import schemes

    monkeypatch.delenv("COMFYVER_TRUSTED_HOSTS", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8080")
    schemes.check_untrusted("http://127.0.0.1:8080/o/r/resolve/main/x.safetensors")
    with pytest.raises(ValueError, match="local or private"):
        schemes.check_untrusted("http://127.0.0.1:22/x.safetensors")
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "mirror.lan:9000, other.lan")
    assert web.is_trusted("mirror.lan", 9000) and not web.is_trusted("mirror.lan", 9001)
    assert web.is_trusted("other.lan", 1234)


def test_fallbacks_decide_on_the_failure_reason_not_its_text(monkeypatch):
    """A saved version the repository lacks falls back to its newest because the error says NOT_FOUND (set where
    git's answer is read), never because its message happens to contain "not found"."""
    from comfyver.base.errors import ComfyverError, Reason
    from comfyver.lock import pipeline
    from comfyver.sources import resolve

    def lock_one(kind, original, what, *a):
        raise ComfyverError(f"{what}: x", reason=Reason.NOT_FOUND if original["ref"] == "gone" else None)
    monkeypatch.setattr(resolve, "lock_one", lock_one)
    items = [resolve.Item(f"nodes.{n}", "git", {"type": "git", "url": f"https://h/o/{n}", "ref": r})
             for n, r in (("a", "gone"), ("b", "not found, but no reason"))]
    with pytest.raises(resolve.ResolveFailed) as e:
        resolve.lock_items(items, progress=False)
    assert e.value.reasons == {"nodes.a": Reason.NOT_FOUND}
    packs = {n: nodemap.Pack(n, f"https://h/o/{n}", None, "v1") for n in ("a", "b")}
    second = pipeline._fallbacks(packs, e.value, {"a", "b"}, None)
    assert set(second) == {"a"} and second["a"][0] == nodemap.Pack("a", "https://h/o/a")


def test_the_probe_decides_what_a_pack_registers_not_the_static_scan(env, capsys, tmp_path, monkeypatch):
    """issue 28: the static "does not register" verdict was raised before the probe step ran, so `--probe` could
    never get past a class the scan misses. With --probe, ComfyUI's own loading decides; the static verdict
    stands only for a pack the probe could not load."""
    from comfyver.lock import probe

    vdir = env.root / "versions" / "pd"
    vdir.mkdir()
    (vdir / "overrides.json").write_text(json.dumps({"classes": {"Dyn": env.pack_b}}))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "Dyn", "mode": 0, "outputs": [{"name": "IMAGE", "links": [1]}]},
                                        {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "link": 1}]}],
                              "links": [[1, 1, 0, 2, 0, "IMAGE"]]}))
    answer: dict = {}
    monkeypatch.setattr(probe, "check_interpreter", lambda python, what="--probe": python)
    monkeypatch.setattr(probe, "for_sources", lambda lock, python, refresh=False: answer)

    def lock(vid: str) -> tuple[int, dict]:
        if vid != "pd":
            (env.root / "versions" / vid).mkdir(exist_ok=True)
            (env.root / "versions" / vid / "overrides.json").write_text((vdir / "overrides.json").read_text())
        rc, out, _ = run(capsys, "lock", vid, "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                         "--no-python", "--json", "--probe", "/usr/bin/python3")
        return rc, json.loads(out)

    # ComfyUI registers Dyn (the pack adds it in a way no scan follows): locked, from the probe
    core = {"SaveImage": {"pack": "comfy-core", "model_inputs": []}}  # the probe lists the core's classes too
    answer.update(packs={"comfyui-b": {"ok": True, "classes": ["SharedText", "Dyn"], "error": ""}},
                  classes={"SharedText": {"pack": "comfyui-b", "model_inputs": []},
                           "Dyn": {"pack": "comfyui-b", "model_inputs": []}, **core})
    rc, res = lock("pd")
    assert rc == 0 and res["knowledge"] == "probe", res
    assert "Dyn" in lockfile.read(vdir / "version.json")["nodes"]["comfyui-b"]["provides"]
    # ComfyUI does not register it: the probe's verdict
    answer.update(packs={"comfyui-b": {"ok": True, "classes": ["SharedText"], "error": ""}},
                  classes={"SharedText": {"pack": "comfyui-b", "model_inputs": []}, **core})
    rc, res = lock("pd2")
    assert rc == 1 and "when ComfyUI loads it (probe)" in res["problems"][0]["problem"], res
    # the pack fails to import: nothing proves it, so the static verdict stands
    answer.update(packs={"comfyui-b": {"ok": False, "classes": [], "error": "ImportError: no module x"}}, classes={})
    rc, res = lock("pd3")
    assert rc == 1 and "does not register 'Dyn'" in res["problems"][0]["problem"], res
    assert not (env.root / "versions" / "pd3" / "version.json").exists()


def test_a_pack_registering_through_a_tuple_assignment_locks_in_one_command(env, capsys, tmp_path):
    """issue 28: ComfyUI-KJNodes' `NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = generate_node_mappings(...)`
    made every KJNodes class "not registered"; now its classes and loaders are scanned."""
    from tests.test_node_knowledge import KJ_STYLE

    make_repo(tmp_path / "ComfyUI-KJNodes", KJ_STYLE, "kj", tag="v1.1.0")
    url = env.git_server.publish(tmp_path / "ComfyUI-KJNodes", "ComfyUI-KJNodes")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 1, "type": "INTConstant", "mode": 0, "widgets_values": [3]},
        {"id": 2, "type": "LTXVEnhanceAVideoKJ", "mode": 0, "widgets_values": []}]}))
    rc, out, err = run(capsys, "lock", "kj", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json", "--node", url)
    assert rc == 0, out + err
    provides = lockfile.read(env.root / "versions" / "kj" / "version.json")["nodes"]["comfyui-kjnodes"]["provides"]
    assert provides == ["INTConstant", "LTXVEnhanceAVideoKJ", "LeapfusionHunyuanI2VPatcher", "VAELoaderKJ"]
    assert not any("could not be verified" in n for n in json.loads(out)["notes"])


def test_a_loose_name_pattern_does_not_take_a_class_one_pack_lists_and_every_pick_says_why(env, capsys, tmp_path):
    """issue 28: a repository whose nodename_pattern is "Hunyuan" took `LeapfusionHunyuanI2VPatcher`, which
    only ComfyUI-KJNodes lists, with no note. The unique exact match wins; the pick and its evidence are printed
    (a note) and in `lock --json` (`picks`)."""
    from tests.test_node_knowledge import KJ_STYLE

    make_repo(tmp_path / "ComfyUI-KJNodes", KJ_STYLE, "kj", tag="v1.1.0")
    kj = env.git_server.publish(tmp_path / "ComfyUI-KJNodes", "ComfyUI-KJNodes")
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({
        kj: [["INTConstant", "LeapfusionHunyuanI2VPatcher"], {"title_aux": "KJNodes"}],
        "https://github.com/someone/Hunyuan-3D-v3": [["Hy3DThing"], {"nodename_pattern": "Hunyuan"}]}))
    nodemap.manager.cache_clear()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "LeapfusionHunyuanI2VPatcher", "mode": 0}]}))
    rc, out, err = run(capsys, "lock", "hy", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["nodes"] == ["comfyui-kjnodes"]
    pick = res["picks"]["LeapfusionHunyuanI2VPatcher"]
    assert pick["node"] == "comfyui-kjnodes" and "unique exact match" in pick["evidence"] and "'Hunyuan'" in pick["evidence"]
    assert any(n.startswith("class LeapfusionHunyuanI2VPatcher: picked comfyui-kjnodes") for n in res["notes"])


def test_optional_models_are_listed_not_demanded(env, capsys, tmp_path):
    """issue 28: a model of a node that ComfyUI will not run (bypassed, muted, outputs connected to nothing) has
    no problem row; `lock` lists it as optional (a note, and `optional` in --json) and does not lock it."""
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["nowhere.safetensors"],
         "outputs": [{"name": "MODEL", "links": []}, {"name": "CLIP", "links": None}, {"name": "VAE", "links": None}]},
        {"id": 2, "type": "LoraLoader", "mode": 4, "widgets_values": ["off.safetensors", 1.0]},
        {"id": 3, "type": "KSampler", "mode": 0, "widgets_values": [1, "fixed", 20]}], "links": []}))
    rc, out, err = run(capsys, "lock", "opt", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["models"] == []
    assert {o["model"]: o["why"] for o in res["optional"]} == {
        "checkpoints/nowhere.safetensors": "unconnected", "loras/off.safetensors": "bypassed"}
    assert any(n.startswith("model checkpoints/nowhere.safetensors: optional") for n in res["notes"])
