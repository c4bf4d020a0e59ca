"""Builders for realize/verify/export tests: a project whose upstream is served on 127.0.0.1.

`make_project` writes a version lock made with the real resolvers: a core and two
custom nodes as git repos behind `git http-backend`, a model file behind the
recording HTTP server, and a tiny pyproject.toml + uv.lock (two pure-Python
PyPI packages) locked with `uv lock`.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from comfyver.base import lockfile, nar
from comfyver.sources import archive, gitsource

from tests.support.gitserver import make_repo

PYPROJECT = """[project]
name = "comfyver-version-{vid}"
version = "0"
requires-python = ">=3.11"
dependencies = ["six==1.16.0", "idna==3.10"]
"""

# a node pack with a requirements.txt; its node uses `six` (installed from uv.lock)
TEXT_NODE = '''
import six


class ShowTextHash:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "comfyver-test"

    def show(self, text):
        return {"ui": {"text": [six.ensure_str(text)]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"ShowTextHash": ShowTextHash}
'''

# a node pack that reads a model through folder_paths and outputs its sha256
MODEL_NODE = '''
import hashlib

import folder_paths


class ModelSha256:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list("comfyver_test"),)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "digest"
    CATEGORY = "comfyver-test"

    def digest(self, model_name):
        path = folder_paths.get_full_path("comfyver_test", model_name)
        with open(path, "rb") as f:
            return (hashlib.sha256(f.read()).hexdigest(),)


NODE_CLASS_MAPPINGS = {"ModelSha256": ModelSha256}
'''

ZIP_NODE = "zip-pack"

FAKE_CORE = {"main.py": "print('core')\n", "custom_nodes/example_node.py.example": "# example\n",
             "comfy/__init__.py": "", "requirements.txt": "six\n"}


@dataclass
class Project:
    root: Path
    vid: str
    lock: dict
    model_bytes: dict[str, bytes] = field(default_factory=dict)
    model_url_path: dict[str, str] = field(default_factory=dict)

    @property
    def vdir(self) -> Path:
        return self.root / "versions" / self.vid


def commit_tree(src: Path, work: Path, message: str) -> Path:
    """`src` copied to `work` as a git repository with one commit (e.g. the real ComfyUI, to lock as a git source)."""
    import shutil

    from tests.support.gitserver import git
    shutil.copytree(src, work)
    git("init", "--quiet", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    return work


def uv_lock(vdir: Path, vid: str) -> None:
    (vdir / "pyproject.toml").write_text(PYPROJECT.format(vid=vid))
    subprocess.run(["uv", "lock", "--quiet", "--project", str(vdir)], check=True, env={**os.environ})


def make_project(tmp_path: Path, git_server, http_server, *, vid: str = "v1", core_files: dict | None = None,
                 models: dict[str, bytes] | None = None, workflows: dict[str, str] | None = None) -> Project:
    work = tmp_path / "upstream"
    make_repo(work / "core", FAKE_CORE if core_files is None else core_files)
    core_url = git_server.publish(work / "core", "core")
    make_repo(work / "text", {"__init__.py": TEXT_NODE, "requirements.txt": "six\n"})
    text_url = git_server.publish(work / "text", "comfyui-text-node")
    make_repo(work / "model", {"__init__.py": MODEL_NODE})
    model_url = git_server.publish(work / "model", "comfyui-model-node")

    core_original = {"type": "git", "url": core_url, "ref": "main"}
    lock = lockfile.empty(vid, core_original, gitsource.lock(core_original, "comfyui"))
    for name, url in (("comfyui-text-node", text_url), ("comfyui-model-node", model_url)):
        original = {"type": "git", "url": url, "ref": "main"}
        lock["nodes"][name] = {"original": original, "locked": gitsource.lock(original, name)}

    models = models if models is not None else {"comfyver_test/tiny.bin": os.urandom(300_000)}
    proj_models = {}
    for key, data in models.items():
        served = "files/" + hashlib.sha256(data).hexdigest()[:12] + "-" + key.rsplit("/", 1)[-1]
        f = http_server.files_root / served
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        url = f"{http_server.url}/{served}"
        lock["models"][key] = {"original": {"url": url},
                               "locked": {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
        proj_models[key] = served
    lock["python"]["torch"] = "cpu"
    root = tmp_path / "project"
    vdir = root / "versions" / vid
    vdir.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    for name, text in (workflows or {}).items():
        (vdir / "workflows").mkdir(exist_ok=True)
        (vdir / "workflows" / name).write_text(text)
        lock["workflows"].append(f"workflows/{name}")
    lockfile.write(vdir / "version.json", lock)
    uv_lock(vdir, vid)
    return Project(root, vid, lock, dict(models), proj_models)


def model_gets(http_server, served: str) -> list[dict]:
    return [r for r in http_server.requests if r["method"] == "GET" and r["path"] == "/" + served]


def add_zip_node(proj, http_server, tmp_path) -> None:
    """A registry-style node: a zip with one root folder, locked by the NAR hash of its unpacked tree."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("zip-pack-1.0/__init__.py", "NODE_CLASS_MAPPINGS = {}\n")
        info = zipfile.ZipInfo("zip-pack-1.0/bin/tool.sh")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, "#!/bin/sh\necho hi\n")
    (http_server.files_root / "pack.zip").write_bytes(buf.getvalue())
    archive.extract_zip(http_server.files_root / "pack.zip", tmp_path / "unzipped", strip_root=True, what="t")
    proj.lock["nodes"][ZIP_NODE] = {
        "original": {"type": "registry", "id": ZIP_NODE, "version": "1.0"},
        "locked": {"type": "zip", "url": f"{http_server.url}/pack.zip",
                   "hash": nar.to_sri(nar.nar_hash(tmp_path / "unzipped")), "stripRoot": True}}
    lockfile.write(proj.vdir / "version.json", proj.lock)
