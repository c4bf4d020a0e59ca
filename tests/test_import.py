"""`comfyver import`: ComfyUI-Manager snapshots and config.yml files -> versions (local servers)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import yaml
from comfyver.base import lockfile
from comfyver.lock import importers

from tests.support.gitserver import git, make_repo
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)


def _registry(env, monkeypatch, node_id="rgthree-comfy", version="1.0.2"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__init__.py", "NODE_CLASS_MAPPINGS = {'Power Lora Loader (rgthree)': object}\n")
    (env.http.files_root / f"{node_id}-{version}.zip").write_bytes(buf.getvalue())
    nv = {"id": "v1", "version": version, "downloadUrl": f"{env.http.url}/{node_id}-{version}.zip", "deprecated": False}
    env.http.routes[f"/nodes/{node_id}/versions/{version}"] = nv
    monkeypatch.setenv("COMFY_REGISTRY_URL", env.http.url)


def _rev(env, name):
    return git("ls-remote", env.__dict__[name], "refs/tags/v1.0.0").split()[0]


def test_import_manager_snapshot(env, capsys, monkeypatch, tmp_path):
    _registry(env, monkeypatch)
    core_rev = git("ls-remote", env.core, "refs/tags/v0.3.75").split()[0]
    snap = {
        "comfyui": core_rev,
        "git_custom_nodes": {env.pack_a: {"hash": _rev(env, "pack_a"), "disabled": False},
                             env.pack_b: {"hash": _rev(env, "pack_b"), "disabled": True}},
        "cnr_custom_nodes": {"rgthree-comfy": "1.0.2"},
        "file_custom_nodes": [{"filename": "my_node.py", "disabled": False}],
        "pips": {"numpy==1.26.4": "", "torch==2.1.0+cu121": ""},
    }
    f = tmp_path / "snapshot.json"
    f.write_text(json.dumps(snap))
    rc, out, err = run(capsys, "import", "snap", str(f), "--comfyui-url", env.core, "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    lock = lockfile.read(env.root / "versions" / "snap" / "version.json")
    assert lock["comfyui"]["locked"]["rev"] == core_rev
    assert set(lock["nodes"]) == {"comfyui-fancy", "rgthree-comfy"}
    assert lock["nodes"]["comfyui-fancy"]["locked"]["rev"] == _rev(env, "pack_a")
    assert lock["nodes"]["comfyui-fancy"]["provides"] == ["FancyBlur", "FancySAMLoader"]
    assert lock["nodes"]["rgthree-comfy"]["original"] == {"type": "registry", "id": "rgthree-comfy", "version": "1.0.2"}
    assert lock["nodes"]["rgthree-comfy"]["locked"]["type"] == "zip"
    assert lock["nodes"]["rgthree-comfy"]["provides"] == ["Power Lora Loader (rgthree)"]  # scanned from the archive
    assert any("disabled" in n and env.pack_b in n for n in res["notes"])
    assert any("my_node.py" in n for n in res["notes"])


def test_import_config_yml(env, capsys, tmp_path):
    work = tmp_path / "ComfyUI-Fancy"  # the env's work repo: add a branch `dev` and publish it
    git("checkout", "-q", "-b", "dev", cwd=work)
    dev_rev = make_repo(work, {"x.py": "# dev\n"}, "dev work")
    git("push", "-q", "--force", str(env.git_server.bare("ComfyUI-Fancy")), "dev", cwd=work)

    cfg = {
        "comfyui": {"url": env.core, "version": "v0.3.75"},
        "nodes": [{"url": env.pack_b, "version": "v1.0.0"}, {"url": env.pack_c, "version": "nightly"},
                  {"url": env.pack_a, "version": "dev"}],
        "models": [
            {"url": env.files["base.safetensors"][0], "destination": "models/checkpoints/"},
            {"url": env.files["sam_b.pth"][0], "destination": "sams/sub/sam.pth"},
            {"url": f"{env.http.url}/gone.safetensors", "destination": "loras", "optional": True},
        ],
    }
    f = tmp_path / "config.yml"
    f.write_text(yaml.safe_dump(cfg))
    rc, out, err = run(capsys, "import", "cfg", str(f), "--no-python", "--json")
    assert rc == 0, out + err
    lock = lockfile.read(env.root / "versions" / "cfg" / "version.json")
    assert set(lock["nodes"]) == {"comfyui-b", "comfyui-c", "comfyui-fancy"}
    assert lock["nodes"]["comfyui-fancy"]["locked"]["rev"] == dev_rev
    assert lock["nodes"]["comfyui-c"]["locked"]["ref"] == "refs/heads/main"
    assert set(lock["models"]) == {"checkpoints/base.safetensors", "sams/sub/sam.pth"}
    assert lock["models"]["sams/sub/sam.pth"]["locked"]["sha256"] == env.files["sam_b.pth"][1]
    notes = json.loads(out)["notes"]
    assert len(notes) == 1 and "models.loras/gone.safetensors" in notes[0] and "404" in notes[0]


def test_import_comfy_build_yaml(env, capsys, monkeypatch, tmp_path):
    """Comfy-Org's comfy-build.yaml (what `comfy build init` writes): the core at baseComfyVersion (a bare version is
    its tag), packs from the registry and from git (a commit wins over gitRef), models by type/filename with their
    sha256, pipDependencies as the version's extra requirements."""
    _registry(env, monkeypatch)
    git("branch", "release/1.0", "v1.0.0", cwd=env.git_server.bare("ComfyUI-C"))  # a branch name with a slash
    spec = {
        "schema": "comfy-build/1", "id": None, "name": "Fixture", "description": "", "syncedRevision": None,
        "definition": {
            "schema": "distribution-definition/0",
            "baseComfyVersion": "0.3.75",
            "customNodes": [
                {"name": "rgthree-comfy", "id": "rgthree-comfy", "registryVersion": "1.0.2"},
                {"name": "ComfyUI-Fancy", "repository": env.pack_a, "gitRef": "main", "commit": _rev(env, "pack_a")},
                {"name": "comfyui-b", "repository": env.pack_b, "gitRef": "v1.0.0"},
                {"repository": env.pack_c, "gitRef": "release/1.0"},
            ],
            "models": [
                {"type": "checkpoints", "filename": "base.safetensors", "sourceUri": env.files["base.safetensors"][0],
                 "sha256": env.files["base.safetensors"][1].upper()},
                {"type": "sams/sub", "sourceUri": env.files["sam_b.pth"][0]},
            ],
            "pipDependencies": "# pins\nsoundfile==0.12.1\n--extra-index-url https://example.invalid/simple\n\n"
                               "onnx>=1.15  # a comment\n",
            "environment": {"os": "linux", "arch": "x86_64", "pythonVersion": "3.11", "torch": "2.7.1"},
        },
    }
    f = tmp_path / "comfy-build.yaml"
    f.write_text(yaml.safe_dump(spec))
    rc, out, err = run(capsys, "import", "cb", str(f), "--comfyui-url", env.core, "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["from"] == "comfy-build"
    lock = lockfile.read(env.root / "versions" / "cb" / "version.json")
    assert lock["comfyui"]["original"]["ref"] == "v0.3.75"
    assert lock["comfyui"]["locked"]["rev"] == git("ls-remote", env.core, "refs/tags/v0.3.75").split()[0]
    assert set(lock["nodes"]) == {"rgthree-comfy", "ComfyUI-Fancy", "comfyui-b", "comfyui-c"}
    assert lock["nodes"]["comfyui-c"]["original"]["ref"] == "release/1.0"
    assert lock["nodes"]["comfyui-c"]["locked"]["rev"] == _rev(env, "pack_c")
    assert lock["nodes"]["ComfyUI-Fancy"]["locked"]["rev"] == _rev(env, "pack_a")
    assert lock["nodes"]["comfyui-b"]["locked"]["rev"] == _rev(env, "pack_b")
    assert lock["nodes"]["rgthree-comfy"]["original"] == {"type": "registry", "id": "rgthree-comfy", "version": "1.0.2"}
    assert set(lock["models"]) == {"checkpoints/base.safetensors", "sams/sub/sam_b.pth"}
    assert lock["models"]["checkpoints/base.safetensors"]["locked"]["sha256"] == env.files["base.safetensors"][1]
    assert lock["python"]["extra"] == ["onnx>=1.15", "soundfile==0.12.1"]
    assert any("pipDependencies line 3" in n and "left out" in n for n in res["notes"])


def test_comfy_build_entries_that_cannot_be_pinned_are_all_named(env, capsys, tmp_path):
    """Every entry that cannot be pinned, in one error, before anything is fetched; nothing written."""
    url = env.files["base.safetensors"][0]
    spec = {"schema": "comfy-build/1", "definition": {
        "baseComfyVersion": "--upload-pack=x",
        "customNodes": [{"name": "mine", "blobId": "b-1"}, {"name": "odd"}, "not a mapping",
                        {"name": "../evil", "repository": env.pack_a},
                        {"repository": env.pack_a, "commit": 1234567},
                        {"repository": env.pack_b, "gitRef": 1.1},
                        {"id": "rgthree-comfy", "registryVersion": "../../x"},
                        {"name": "twice", "repository": env.pack_a}, {"name": "twice", "repository": env.pack_b}],
        "models": [{"type": "loras", "filename": "x.safetensors", "blobId": "b-2"},
                   {"type": "loras", "filename": "../../etc/passwd", "sourceUri": url},
                   {"type": "/etc", "filename": "a.bin", "sourceUri": url},
                   {"type": "loras", "filename": "a\x1b[31m.safetensors", "sourceUri": url},
                   {"type": "loras", "filename": "b.safetensors", "sourceUri": url, "sha256": 12},
                   {"type": "vae", "filename": "v.pt", "sourceUri": url},
                   {"type": "vae", "filename": "v.pt", "sourceUri": url + "?other"}],
        "pipDependencies": ["soundfile==1"]}}
    f = tmp_path / "comfy-build.yaml"
    f.write_text(yaml.safe_dump(spec))
    rc, _, err = run(capsys, "import", "cbx", str(f), "--no-python")
    assert rc == 2, err
    wanted = ("definition.baseComfyVersion: '--upload-pack=x' is not a valid git ref",
              "definition.customNodes[0] (mine): uploaded to Comfy's builder",
              "definition.customNodes[1] (odd): expected", "definition.customNodes[2]: expected a mapping",
              "definition.customNodes[3] (../evil): name '../evil' is not a custom_nodes folder name",
              "definition.customNodes[4]: commit 1234567 is not a 40-hex commit",
              "definition.customNodes[5]: gitRef 1.1 is not a string",
              "definition.customNodes[6]: registryVersion '../../x' is not a published version",
              "definition.customNodes[8] (twice): a second entry for node 'twice'",
              "definition.models[0]: uploaded", "definition.models[1]: filename '../../etc/passwd' is not one file name",
              "definition.models[2]: type '/etc' is not a folder", "definition.models[3]: filename",
              "definition.models[4]: sha256 12 is not a 64-hex digest",
              "definition.models[6]: a second entry for the model 'vae/v.pt'",
              "definition.pipDependencies: expected requirements-file text")
    for what in wanted:
        assert what in err, (what, err)
    assert f"{len(wanted)} entries cannot be pinned" in err
    assert "\x1b" not in err
    assert not (env.root / "versions" / "cbx").exists()
    assert not list((tmp_path / "cache").rglob("sha256/*")) if (tmp_path / "cache").exists() else True
    for definition in ([], "x", None):  # no mapping: said, with the missing version, in one error
        f.write_text(yaml.safe_dump({"schema": "comfy-build/1", "definition": definition}))
        rc, _, err = run(capsys, "import", "cbx", str(f), "--no-python")
        assert rc == 2 and "definition: expected a mapping" in err and "baseComfyVersion" in err, err
    for listing in ({"customNodes": 5}, {"models": True}):
        f.write_text(yaml.safe_dump({"schema": "comfy-build/1", "definition": {"baseComfyVersion": "v0.3.75", **listing}}))
        rc, _, err = run(capsys, "import", "cbx", str(f), "--no-python")
        assert rc == 2 and f"definition.{next(iter(listing))}: expected a list" in err, err
    f.write_text(yaml.safe_dump({"schema": "comfy-build/9", "definition": {}}))
    rc, _, err = run(capsys, "import", "cbx", str(f), "--no-python")
    assert rc == 1 and "only 'comfy-build/1'" in err


def test_import_refuses_bad_input(env, capsys, tmp_path):
    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump({"models": [{"url": "https://x/y.bin", "destination": "../../etc/passwd"}]}))
    rc, _, err = run(capsys, "import", "bad", str(f), "--no-python")
    assert rc == 2 and "models[0]" in err and ".." in err
    f.write_text(yaml.safe_dump({"nodes": [{"url": "--upload-pack=evil", "version": "latest"}]}))
    rc, _, err = run(capsys, "import", "bad", str(f), "--no-python")
    assert rc == 2 and "upload-pack" in err
    f.write_text(yaml.safe_dump({"models": [{"url": "ftp://x/y.bin", "destination": "loras/y.bin"}]}))
    rc, _, err = run(capsys, "import", "bad", str(f), "--no-python")
    assert rc == 2 and "ftp" in err
    f.write_text("just: text\n")
    rc, _, err = run(capsys, "import", "bad", str(f), "--no-python")
    assert rc == 1 and "neither a ComfyUI-Manager snapshot" in err
    assert not (env.root / "versions" / "bad").exists()


@pytest.mark.parametrize("dest,url,key", [
    ("checkpoints", "https://h/a/b/model.safetensors", "checkpoints/model.safetensors"),
    ("models/loras/x/", "https://h/f%20g.safetensors?download=true", "loras/x/f g.safetensors"),
    ("vae/custom.pt", "https://h/other.pt", "vae/custom.pt"),
])
def test_model_destination(dest, url, key):
    assert importers.model_path(dest, url, "t") == key


def test_pip_evidence_differences():
    pl = importers.plan({"comfyui": "a" * 40, "pips": {"numpy==1.26.4": "", "torch==2.1.0+cu121": "",
                                                       "Pillow==10.0.0": "", "-e git+x": ""}}, "s")
    assert pl.pips == {"numpy": "1.26.4", "torch": "2.1.0+cu121", "pillow": "10.0.0"}
    diffs = importers.pip_differences(pl, {"numpy": "2.1.0", "torch": "2.1.0", "pillow": "10.0.0"})
    assert diffs == ["numpy: snapshot had 1.26.4, the lock has 2.1.0"]
