"""`comfyver import ID --from-install DIR`: a real install (the real ComfyUI history at a tag, real corpus packs from
../shared/data/node-packs-v2, a Comfy Registry install, model files in nested folders) read into a version, offline:
`https://github.com/` reaches a local forge of bare repositories through git's insteadOf; nothing in DIR is written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from comfyver import cli
from comfyver.base import lockfile
from comfyver.lock import install

from tests.support import nodepacks
from tests.support.gitserver import git
from tests.test_modelsearch import servers  # noqa: F401  (fixture)

CORE_TAG, CORE_REV = "v0.3.75", "8402c8700a29a97bc5d706d6a0b14c41bc2c2d8a"
PACKS = {"masquerade-nodes-comfyui": "BadCafeCode/masquerade-nodes-comfyui",   # at its pinned commit (= head)
         "ComfyUI-DepthAnythingV2": "kijai/ComfyUI-DepthAnythingV2",
         "comfyui-tooling-nodes": "Acly/comfyui-tooling-nodes",                # pinned commit, older than its head
         "ComfyUI_essentials.disabled": "cubiq/ComfyUI_essentials"}            # disabled: left out, listed
MODELS = {"checkpoints/sd/base.safetensors": 3_000_000, "loras/a.safetensors": 200_000,
          "loras/style/deep/b.pt": 50_000, "upscale_models/x4.pth": 1_000_000}
OLD = 1_700_000_000 * 10**9  # models are old files: the stat cache remembers only files not written in the last 2 s


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.fixture
def forge(tmp_path, monkeypatch, http_server):
    """Bare repositories of ComfyUI and the packs, reached as https://github.com/<owner>/<name> (file://, no
    network); a Comfy Registry stand-in serving rgthree-comfy 1.0.2; a project to import into."""
    root = tmp_path / "forge"
    packs = nodepacks.by_repo()
    for repo in PACKS.values():
        owner, name = repo.split("/")
        bare = nodepacks.bare(packs[repo], nodepacks.cache_dir() / "bare-v2" / owner / name)
        (root / owner).mkdir(parents=True, exist_ok=True)
        (root / owner / name).symlink_to(bare)
    (root / "comfyanonymous").mkdir()
    (root / "comfyanonymous" / "ComfyUI").symlink_to(nodepacks.CORE)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{root}/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__init__.py", "NODE_CLASS_MAPPINGS = {'Power Lora Loader (rgthree)': object}\n")
    (http_server.files_root / "rgthree-1.0.2.zip").write_bytes(buf.getvalue())
    http_server.routes["/nodes/rgthree-comfy/versions/1.0.2"] = {
        "id": "v1", "version": "1.0.2", "downloadUrl": f"{http_server.url}/rgthree-1.0.2.zip", "deprecated": False}
    monkeypatch.setenv("COMFY_REGISTRY_URL", http_server.url)
    monkeypatch.setenv("COMFYVER_TRUSTED_HOSTS", "127.0.0.1")
    proj = tmp_path / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    monkeypatch.chdir(proj)
    return proj


def make_install(where: Path) -> Path:
    """ComfyUI cloned at a tag, corpus packs cloned at their pinned commits, a registry install, models."""
    d = where / "ComfyUI"
    git("clone", "-q", "--depth", "1", "--branch", CORE_TAG, "https://github.com/comfyanonymous/ComfyUI", str(d))
    packs = nodepacks.by_repo()
    for folder, repo in PACKS.items():
        dest = d / "custom_nodes" / folder
        git("clone", "-q", f"https://github.com/{repo}", str(dest))
        git("-c", "advice.detachedHead=false", "checkout", "-q", packs[repo]["commit"], cwd=dest)
    (d / "custom_nodes" / "masquerade-nodes-comfyui" / "__pycache__").mkdir(exist_ok=True)  # byte-code: no change
    (d / "custom_nodes" / "masquerade-nodes-comfyui" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    reg = d / "custom_nodes" / "rgthree-comfy"
    reg.mkdir()
    (reg / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (reg / "pyproject.toml").write_text('[project]\nname = "rgthree-comfy"\nversion = "1.0.2"\n'
                                        '[tool.comfy]\nPublisherId = "rgthree"\n')
    (reg / ".tracking").write_text("__init__.py\npyproject.toml\n")
    (d / "custom_nodes" / "my_node.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    for key, size in MODELS.items():
        f = d / "models" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(hashlib.sha256(key.encode()).digest() * (size // 32) + b"x" * (size % 32))
        os.utime(f, ns=(OLD, OLD))
    (d / "models" / "loose.bin").write_bytes(b"not in a folder")
    (d / "models" / "loras" / ".DS_Store").write_bytes(b"mac")
    return d


def listing(d: Path) -> dict[str, tuple]:
    """Every path under `d` (links not followed) with its type, size, mode and mtime."""
    out = {}
    for top, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            out[os.path.relpath(p, d)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def expected_sha(key: str) -> str:
    size = MODELS[key]
    return hashlib.sha256(hashlib.sha256(key.encode()).digest() * (size // 32) + b"x" * (size % 32)).hexdigest()


def test_import_from_install_pins_revs_and_models_and_writes_nothing(forge, tmp_path, capsys):
    d = make_install(tmp_path / "pod")
    before = listing(d)
    t0 = time.monotonic()
    rc, out, err = run(capsys, "import", "pod", "--from-install", str(d), "--no-python", "--json")
    cold = time.monotonic() - t0
    assert rc == 0, out + err
    res = json.loads(out)
    lock = lockfile.read(forge / "versions" / "pod" / "version.json")
    assert lock["comfyui"]["original"] == {"type": "git", "url": "https://github.com/comfyanonymous/ComfyUI", "ref": CORE_REV}
    assert lock["comfyui"]["locked"]["rev"] == CORE_REV
    packs = nodepacks.by_repo()
    assert set(lock["nodes"]) == {"masquerade-nodes-comfyui", "comfyui-depthanythingv2", "comfyui-tooling-nodes",
                                  "rgthree-comfy"}
    for folder in ("masquerade-nodes-comfyui", "ComfyUI-DepthAnythingV2", "comfyui-tooling-nodes"):
        repo = PACKS[folder]
        node = lock["nodes"][folder.lower()]
        assert node["original"] == {"type": "git", "url": f"https://github.com/{repo}", "ref": packs[repo]["commit"]}
        assert node["locked"]["rev"] == packs[repo]["commit"]
        assert node["locked"]["hash"] == packs[repo]["nar_hash"]  # the real NAR hash of the pinned tree
    assert lock["nodes"]["rgthree-comfy"]["original"] == {"type": "registry", "id": "rgthree-comfy", "version": "1.0.2"}
    # every model placed by folder, pinned by its sha256 and size as a local file (no download, `unverified`)
    assert set(lock["models"]) == set(MODELS)
    for key, size in MODELS.items():
        m = lock["models"][key]
        assert m["locked"] == {"url": (d / "models" / key).as_uri(), "sha256": expected_sha(key), "size": size,
                               "unverified": True}
    assert res["install"]["hash"]["hashed"] == len(MODELS) and res["install"]["hash"]["cached"] == 0
    assert res["install"]["core"] == {"source": "git", "ref": CORE_REV, "url": "https://github.com/comfyanonymous/ComfyUI",
                                      "version": None}
    assert res["install"]["disabled"] == ["ComfyUI_essentials.disabled"]
    notes = "\n".join(res["notes"])
    for left in ("ComfyUI_essentials.disabled", "custom_nodes/my_node.py", "models/loose.bin", "models/loras/.DS_Store"):
        assert left in notes
    assert "put_checkpoints_here" not in notes and "websocket_image_save" not in notes  # the core's own files

    # a second import of the unchanged install hashes nothing (the stat cache), and gives the same lock
    t0 = time.monotonic()
    rc, out, err = run(capsys, "import", "pod2", "--from-install", str(d), "--no-python", "--json")
    warm = time.monotonic() - t0
    assert rc == 0, out + err
    res2 = json.loads(out)
    assert res2["install"]["hash"]["hashed"] == 0 and res2["install"]["hash"]["cached"] == len(MODELS)
    lock2 = lockfile.read(forge / "versions" / "pod2" / "version.json")
    assert lock2["models"] == lock["models"] and lock2["nodes"] == lock["nodes"]
    assert listing(d) == before  # nothing in DIR written: not a file, not git's index
    with capsys.disabled():
        print(f"\nimport of the test install: cold {cold:.2f} s, warm {warm:.2f} s")

    # one model rewritten (same size, other bytes): only it is hashed again, and its new sha256 recorded
    f = d / "models" / "loras" / "a.safetensors"
    f.write_bytes(b"y" * MODELS["loras/a.safetensors"])
    os.utime(f, ns=(OLD + 10**9, OLD + 10**9))
    rc, out, err = run(capsys, "import", "pod3", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    assert json.loads(out)["install"]["hash"]["hashed"] == 1
    lock3 = lockfile.read(forge / "versions" / "pod3" / "version.json")
    assert lock3["models"]["loras/a.safetensors"]["locked"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_dirty_packs_are_refused_by_name(forge, tmp_path, capsys):
    d = make_install(tmp_path / "pod")
    dap = d / "custom_nodes" / "ComfyUI-DepthAnythingV2"
    (dap / "nodes.py").write_text((dap / "nodes.py").read_text() + "\n# local edit\n")
    (dap / "notes.txt").write_text("mine")
    tooling = d / "custom_nodes" / "comfyui-tooling-nodes"
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "local", cwd=tooling)
    before = listing(d)
    rc, _, err = run(capsys, "import", "dirty", "--from-install", str(d), "--no-python")
    assert rc == 1
    assert "custom_nodes/ComfyUI-DepthAnythingV2: 1 changed file(s): nodes.py" in err
    assert "custom_nodes/ComfyUI-DepthAnythingV2: 1 untracked file(s): notes.txt" in err
    assert "custom_nodes/comfyui-tooling-nodes: commit" in err and "on no remote branch or tag" in err
    assert "masquerade" not in err and "hint:" in err
    assert not (forge / "versions" / "dirty").exists()
    assert not (tmp_path / "cache" / install.CACHE_NAME).exists()  # refused before any model was hashed
    assert listing(d) == before


def test_name_clashes_are_refused_before_any_model_is_hashed(forge, tmp_path, capsys):
    """Two forks of one repository name would be one node of the version, and two workflows one saved file: both
    named, with the fix for an install, before a model is hashed; one pack twice at one revision is no clash."""
    forge_root = tmp_path / "forge"
    (forge_root / "fork").mkdir()
    (forge_root / "fork" / "comfyui-tooling-nodes").symlink_to(os.readlink(forge_root / "Acly" / "comfyui-tooling-nodes"))
    d = make_install(tmp_path / "pod")
    git("clone", "-q", "https://github.com/fork/comfyui-tooling-nodes", str(d / "custom_nodes" / "tooling-fork"))
    git("clone", "-q", "https://github.com/BadCafeCode/masquerade-nodes-comfyui", str(d / "custom_nodes" / "masq-2"))
    wf = d / "user" / "default" / "workflows"
    wf.mkdir(parents=True)
    (wf / "my wf.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    (wf / "my-wf.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    rc, out, err = run(capsys, "import", "clash", "--from-install", str(d), "--no-python", "--workflows", "--json")
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert set(problems) == {"custom_nodes/comfyui-tooling-nodes, custom_nodes/tooling-fork",
                             "user/default/workflows/my wf.json, user/default/workflows/my-wf.json"}, problems
    assert "would all be node 'comfyui-tooling-nodes'" in problems[
        "custom_nodes/comfyui-tooling-nodes, custom_nodes/tooling-fork"]
    assert "custom_nodes/.disabled" in problems["custom_nodes/comfyui-tooling-nodes, custom_nodes/tooling-fork"]
    assert "workflows/my-wf.json" in problems["user/default/workflows/my wf.json, user/default/workflows/my-wf.json"]
    assert not (tmp_path / "cache" / install.CACHE_NAME).exists()  # refused before any model was hashed
    assert not (forge / "versions" / "clash").exists()


def test_a_checkout_borrowing_git_objects_from_outside_dir_is_named_and_git_not_run(forge, tmp_path, capsys):
    """`git clone --reference` leaves objects/info/alternates naming a store outside DIR: git would read it, so the
    pack is named with the fix and git is never run in it; the other packs are read as usual."""
    d = make_install(tmp_path / "pod")
    bare = os.readlink(tmp_path / "forge" / "Acly" / "comfyui-tooling-nodes")
    dest = d / "custom_nodes" / "borrowed"
    git("clone", "-q", "--reference", bare, "https://github.com/Acly/comfyui-tooling-nodes", str(dest))
    assert (dest / ".git" / "objects" / "info" / "alternates").is_file()
    url = "https://github.com/Acly/comfyui-tooling-nodes"
    for name in ("quoted", "chained", "linked", "common"):
        git("clone", "-q", url, str(d / "custom_nodes" / name))
    g = d / "custom_nodes"
    (g / "quoted" / ".git" / "objects" / "info" / "alternates").write_text(f'"{bare}/objects"\n')  # git unquotes it
    (g / "chained" / ".git" / "store" / "info").mkdir(parents=True)  # a store inside DIR whose alternates lead out
    (g / "chained" / ".git" / "objects" / "info" / "alternates").write_text("../store\n")
    (g / "chained" / ".git" / "store" / "info" / "alternates").write_text(f"{bare}/objects\n")
    os.rename(g / "linked" / ".git" / "objects", tmp_path / "outside-objects")
    (g / "linked" / ".git" / "objects").symlink_to(tmp_path / "outside-objects")
    (g / "common" / ".git" / "commondir").write_text(f"{bare}\n")
    rc, out, err = run(capsys, "import", "alt", "--from-install", str(d), "--no-python", "--json")
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert sorted(problems) == [f"custom_nodes/{n}" for n in ("borrowed", "chained", "common", "linked", "quoted")]
    assert "borrowed from" in problems["custom_nodes/borrowed"] and "outside DIR" in problems["custom_nodes/borrowed"]
    assert "git repack -a -d" in problems["custom_nodes/borrowed"]
    assert "borrowed from" in problems["custom_nodes/chained"] and "store/info/alternates" in problems[
        "custom_nodes/chained"]
    assert "quoted entry" in problems["custom_nodes/quoted"]
    assert "objects is not a folder" in problems["custom_nodes/linked"]
    assert "commondir" in problems["custom_nodes/common"]


def test_hostile_install_is_refused_by_name_and_never_followed(forge, tmp_path, capsys):
    d = make_install(tmp_path / "pod")
    (d / "custom_nodes" / "root").symlink_to("/")
    (d / "custom_nodes" / "evil\nname").mkdir()
    (d / "models" / "loras" / "passwd.safetensors").symlink_to("/etc/passwd")
    (d / "models" / "volume").symlink_to(tmp_path)                    # a model folder that leaves DIR
    (d / "models" / "checkpoints" / "two\nlines.safetensors").write_bytes(b"x")
    os.mkfifo(d / "models" / "checkpoints" / "pipe.safetensors")    # would block a plain open
    before = listing(d)
    rc, out, _ = run(capsys, "import", "evil", "--from-install", str(d), "--no-python", "--json")
    assert rc == 1
    res = json.loads(out)
    problems = {p["item"]: p["problem"] for p in res["problems"]}
    assert problems == {
        "custom_nodes/root": "a symbolic link (to /): not followed",
        "custom_nodes/'evil\\nname'": "its name has control characters: refused",
        "models/loras/passwd.safetensors": "a symbolic link (to /etc/passwd): not followed",
        "models/volume": f"a symbolic link (to {tmp_path}): not followed",
        "models/checkpoints/'two\\nlines.safetensors'": "its name has control characters: refused",
        "models/checkpoints/pipe.safetensors": "not a regular file (a pipe, socket or device): refused",
    }
    assert res["ok"] is False and "custom_nodes/root: a symbolic link (to /)" in res["error"] and res["hint"]
    rc, _, err = run(capsys, "import", "evil", "--from-install", str(d), "--no-python")  # human: the same, one a line
    assert rc == 1 and "models/checkpoints/pipe.safetensors: not a regular file" in err
    assert not (forge / "versions" / "evil").exists()
    assert listing(d) == before


def test_unreadable_model_is_named(forge, tmp_path, capsys, monkeypatch):
    d = make_install(tmp_path / "pod")
    f = d / "models" / "loras" / "a.safetensors"
    if os.geteuid() == 0:  # root reads a mode-000 file: make its open fail as it fails for anyone else
        real = install._open_seen

        def deny(seen):
            if seen.path == str(f):
                raise PermissionError(13, "Permission denied")
            return real(seen)
        monkeypatch.setattr(install, "_open_seen", deny)
    f.chmod(0)
    try:
        rc, _, err = run(capsys, "import", "locked", "--from-install", str(d), "--no-python")
    finally:
        f.chmod(0o644)
    assert rc == 1 and "models/loras/a.safetensors: cannot be read (Permission denied)" in err
    assert not (forge / "versions" / "locked").exists()


def test_core_from_comfyui_version_py(forge, tmp_path, capsys):
    """A ComfyUI that is no git checkout (a release archive): comfyui_version.py's version, locked as its tag."""
    d = tmp_path / "ComfyUI"
    d.mkdir()
    (d / "comfyui_version.py").write_text('# auto\n__version__ = "0.3.75"\n')
    (d / "models" / "checkpoints").mkdir(parents=True)
    (d / "models" / "checkpoints" / "put_checkpoints_here").write_text("")
    (d / "models" / "configs").mkdir()
    (d / "models" / "configs" / "v1-inference.yaml").write_text("model: {}\n")
    rc, out, err = run(capsys, "import", "rel", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    lock = lockfile.read(forge / "versions" / "rel" / "version.json")
    assert lock["comfyui"]["original"]["ref"] == "v0.3.75" and lock["comfyui"]["locked"]["rev"] == CORE_REV
    assert lock["models"] == {}
    notes = "\n".join(json.loads(out)["notes"])
    assert "comfyui_version.py says 0.3.75" in notes and "models/configs/v1-inference.yaml" in notes


def test_a_comfy_desktop_base_path_takes_its_core_from_comfyui_ref(forge, tmp_path, capsys):
    """Comfy Desktop keeps custom_nodes/, models/, user/ and .venv in its base path and ComfyUI in the app: the
    import names the missing core with the fix; --comfyui-ref locks it; on a folder with its own core it is refused."""
    base = tmp_path / "desktop"
    pack = base / "custom_nodes" / "masquerade-nodes-comfyui"
    git("clone", "-q", "https://github.com/BadCafeCode/masquerade-nodes-comfyui", str(pack))
    (base / "models" / "loras").mkdir(parents=True)
    (base / "models" / "loras" / "a.safetensors").write_bytes(b"lora" * 1000)
    _dist(base / ".venv" / "lib" / "python3.12" / "site-packages", "torch", "2.7.1+cu128")
    rc, out, err = run(capsys, "import", "dt", "--from-install", str(base), "--no-python", "--json")
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert list(problems) == ["ComfyUI"] and "Comfy Desktop" in problems["ComfyUI"] and "--comfyui-ref" in problems[
        "ComfyUI"]
    rc, out, err = run(capsys, "import", "dt", "--from-install", str(base), "--comfyui-ref", CORE_TAG, "--no-python",
                       "--json")
    assert rc == 0, out + err
    lock = lockfile.read(forge / "versions" / "dt" / "version.json")
    assert lock["comfyui"]["original"]["ref"] == CORE_TAG and lock["comfyui"]["locked"]["rev"] == CORE_REV
    assert set(lock["nodes"]) == {"masquerade-nodes-comfyui"} and set(lock["models"]) == {"loras/a.safetensors"}
    assert lock["python"]["torch"] == "cu128"
    assert any("Comfy Desktop" in n and CORE_TAG in n for n in json.loads(out)["notes"])
    d = make_install(tmp_path / "pod")
    rc, out, err = run(capsys, "import", "dt2", "--from-install", str(d), "--comfyui-ref", CORE_TAG, "--no-python",
                       "--json")
    assert rc == 1 and "--comfyui-ref is only for a folder without one" in out, out + err
    rc, _, err = run(capsys, "import", "dt3", "--from-install", str(base), "--comfyui-ref=--upload-pack=x")
    assert rc == 2 and "not a valid git ref" in err


def test_a_yaml_comfyui_was_started_with_is_read_after_dirs_own(forge, tmp_path, capsys):
    """--extra-model-paths-config FILE (Comfy Desktop's extra_models_config.yaml, or any yaml ComfyUI was started
    with): its folders are read as models, a relative path being the yaml's folder's, as ComfyUI reads it; a yaml
    that cannot be read is named by its path."""
    d = make_install(tmp_path / "pod")
    user_data = tmp_path / "userData"
    (user_data / "lib" / "loras").mkdir(parents=True)
    (user_data / "lib" / "loras" / "extra.safetensors").write_bytes(b"e" * 5000)
    shared = tmp_path / "shared"
    (shared / "models" / "vae").mkdir(parents=True)
    (shared / "models" / "vae" / "v.safetensors").write_bytes(b"v" * 7000)
    config = user_data / "extra_models_config.yaml"
    config.write_text(f"comfyui:\n  base_path: {shared}\n  vae: models/vae/\nlocal:\n  base_path: lib\n"
                      "  loras: loras\n")
    rc, out, err = run(capsys, "import", "ey", "--from-install", str(d), "--no-python", "--json",
                       "--extra-model-paths-config", str(config))
    assert rc == 0, out + err
    lock = lockfile.read(forge / "versions" / "ey" / "version.json")
    assert {"vae/v.safetensors", "loras/extra.safetensors"} <= set(lock["models"])
    extra = {(x["yaml"], x["entry"]): x for x in json.loads(out)["install"]["extra_model_paths"]}
    assert extra[str(config), "comfyui.vae"]["files"] == 1 and extra[str(config), "local.loras"]["files"] == 1
    assert extra[str(config), "local.loras"]["path"] == str(user_data / "lib" / "loras")
    rc, out, err = run(capsys, "import", "ey2", "--from-install", str(d), "--no-python", "--json",
                       "--extra-model-paths-config", str(tmp_path / "missing.yaml"))
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert "cannot be read" in problems[str(tmp_path / "missing.yaml")], problems


def test_usage(forge, tmp_path, capsys):
    rc, _, err = run(capsys, "import", "x")
    assert rc == 2 and "--from-install DIR" in err
    rc, _, err = run(capsys, "import", "x", "--from-install", str(tmp_path / "nope"), "--no-python")
    assert rc == 2 and "not a folder" in err
    rc, _, err = run(capsys, "import", "x", "--from-install", str(tmp_path), "--no-python")
    assert rc == 1 and "neither a git checkout nor a comfyui_version.py" in err


def test_a_file_swapped_after_the_scan_is_not_read(tmp_path):
    """Between the scan and the hash, a model replaced (here by a link out of DIR, then by another file) is refused:
    the file hashed is the very inode the scan saw, opened without following a link."""
    d = tmp_path / "ComfyUI"
    (d / "models" / "loras").mkdir(parents=True)
    for n in ("a.safetensors", "b.safetensors"):
        (d / "models" / "loras" / n).write_bytes(n.encode())
    problems: list[install.Problem] = []
    seen = install._scan_models(d, problems, [], set(), False)
    assert [s.key for s in seen] == ["loras/a.safetensors", "loras/b.safetensors"] and not problems
    (d / "models" / "loras" / "a.safetensors").unlink()
    (d / "models" / "loras" / "a.safetensors").symlink_to("/etc/passwd")
    (tmp_path / "other").write_bytes(b"other")
    os.replace(tmp_path / "other", d / "models" / "loras" / "b.safetensors")
    found, stats = install.hash_models(d, seen, problems, jobs=2, progress=False)
    assert found == [] and stats.hashed == 0
    assert {p.item for p in problems} == {"models/loras/a.safetensors", "models/loras/b.safetensors"}
    why = {p.item.rsplit("/", 1)[1]: p.problem for p in problems}
    assert why == {"a.safetensors": "replaced by a symbolic link while importing: not followed",
                   "b.safetensors": "replaced while importing (not the file the scan saw): refused"}


def _old_file(f: Path, data: bytes) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    os.utime(f, ns=(OLD, OLD))


def test_extra_model_paths_yaml_folders_are_read_by_comfyuis_rules(forge, tmp_path, capsys):
    """extra_model_paths.yaml as ComfyUI's utils/extra_config.py reads it: an absolute base_path outside DIR (read,
    is_default: its file wins a key models/ also has), a `|` block of two paths, a legacy key (`clip` ->
    text_encoders), a relative base_path inside DIR, a missing folder (noted), and the stat cache covers it all."""
    d = make_install(tmp_path / "pod")
    vol = tmp_path / "volume"
    _old_file(vol / "models" / "checkpoints" / "big.safetensors", b"big" * 1000)
    _old_file(vol / "models" / "checkpoints" / "sd" / "base.safetensors", b"the volume's base")
    _old_file(vol / "models" / "clip" / "t5.safetensors", b"t5")
    _old_file(vol / "models" / "text" / "nested" / "l.safetensors", b"clip-l")
    _old_file(vol / "models" / "checkpoints" / "put_checkpoints_here", b"")
    _old_file(d / "extra" / "Lora" / "c.safetensors", b"c")
    (d / "extra_model_paths.yaml").write_text(
        f"comfyui:\n  base_path: {vol}\n  is_default: true\n  checkpoints: models/checkpoints/\n"
        "  clip: |\n    models/clip\n    models/text\n"
        "a111:\n  base_path: extra\n  loras: Lora\n  vae: VAE\n"
        "empty:\n")
    before, vol_before = listing(d), listing(vol)
    rc, out, err = run(capsys, "import", "pod", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    lock = lockfile.read(forge / "versions" / "pod" / "version.json")
    extra = {"checkpoints/big.safetensors": vol / "models" / "checkpoints" / "big.safetensors",
             "checkpoints/sd/base.safetensors": vol / "models" / "checkpoints" / "sd" / "base.safetensors",
             "text_encoders/t5.safetensors": vol / "models" / "clip" / "t5.safetensors",
             "text_encoders/nested/l.safetensors": vol / "models" / "text" / "nested" / "l.safetensors",
             "loras/c.safetensors": d / "extra" / "Lora" / "c.safetensors"}
    assert set(lock["models"]) == set(MODELS) | set(extra)
    for key, f in extra.items():
        assert lock["models"][key]["locked"] == {"url": f.as_uri(), "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                                                 "size": f.stat().st_size, "unverified": True}
    assert [{k: v for k, v in x.items() if k != "yaml"} for x in res["install"]["extra_model_paths"]] == [
        {"entry": "comfyui.checkpoints", "folder": "checkpoints", "path": str(vol / "models" / "checkpoints"),
         "outside": True, "files": 2, "note": None},
        {"entry": "comfyui.clip", "folder": "text_encoders", "path": str(vol / "models" / "clip"), "outside": True,
         "files": 1, "note": None},
        {"entry": "comfyui.clip", "folder": "text_encoders", "path": str(vol / "models" / "text"), "outside": True,
         "files": 1, "note": None},
        {"entry": "a111.loras", "folder": "loras", "path": str(d / "extra" / "Lora"), "outside": False, "files": 1,
         "note": None},
        {"entry": "a111.vae", "folder": "vae", "path": str(d / "extra" / "VAE"), "outside": False, "files": 0,
         "note": "does not exist"}]
    assert {x["yaml"] for x in res["install"]["extra_model_paths"]} == {"extra_model_paths.yaml"}
    notes = "\n".join(res["notes"])
    assert "models/checkpoints/sd/base.safetensors: hidden by " in notes  # is_default: ComfyUI finds the volume's
    assert f"extra_model_paths.yaml comfyui.checkpoints: {vol / 'models' / 'checkpoints'}: 2 model file(s) read" in notes
    assert res["install"]["hash"]["hashed"] == len(MODELS) - 1 + len(extra)
    rc, out, err = run(capsys, "import", "pod2", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    assert json.loads(out)["install"]["hash"]["hashed"] == 0  # the stat cache covers the yaml's folders too
    assert listing(d) == before and listing(vol) == vol_before


def test_extra_model_paths_never_lead_out_of_dir_unasked(forge, tmp_path, capsys):
    """A relative path that climbs out of DIR, a link on the way to a folder inside DIR and a link inside an
    absolute folder the yaml names are refused by name; none is followed."""
    d = make_install(tmp_path / "pod")
    vol = tmp_path / "volume"
    _old_file(vol / "loras" / "ok.safetensors", b"ok")
    (vol / "loras" / "passwd.safetensors").symlink_to("/etc/passwd")
    (vol / "up").mkdir()
    _old_file(vol / "up" / "x.pth", b"x")
    (d / "linked").symlink_to(vol)
    (d / "extra_model_paths.yaml").write_text(
        f"vol:\n  loras: {vol}/loras\nrel:\n  upscale_models: ../../volume/up\nvia:\n  base_path: linked\n  vae: up\n")
    before = listing(d)
    rc, out, err = run(capsys, "import", "bad", "--from-install", str(d), "--no-python", "--json")
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert problems == {
        f"{vol}/loras/passwd.safetensors": "a symbolic link (to /etc/passwd): not followed",
        f"extra_model_paths.yaml rel.upscale_models: {vol / 'up'}":
            "leads outside the install (a relative path); name the folder by an absolute path in the yaml to read it",
        "extra_model_paths.yaml via.vae: linked/up": "linked on its way is a symbolic link: not followed",
        "ComfyUI": "1 untracked file(s): linked"}  # the link itself: not a folder the yaml reads
    assert not (forge / "versions" / "bad").exists() and listing(d) == before


def test_workflows_are_offered_and_copied_with_workflows(forge, tmp_path, capsys):
    """user/default/workflows/*.json listed; with --workflows saved as `lock --workflow` saves them (its naming:
    unsafe characters -> '-'); a link, a subfolder and a non-JSON file there are left out by name."""
    d = make_install(tmp_path / "pod")
    wf = d / "user" / "default" / "workflows"
    wf.mkdir(parents=True)
    (wf / "my flow (v2).json").write_text('{"nodes": [], "links": []}')
    (wf / "api.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    (wf / "notes.txt").write_text("x")
    (wf / "linked.json").symlink_to("/etc/passwd")
    (wf / "sub").mkdir()
    rc, out, err = run(capsys, "import", "listed", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["install"]["workflows"] == [{"name": "api.json", "size": 48, "copied_as": None},
                                           {"name": "my flow (v2).json", "size": 26, "copied_as": None}]
    assert res["workflows"] == [] and not (forge / "versions" / "listed" / "workflows").exists()
    notes = "\n".join(res["notes"])
    assert "user/default/workflows/linked.json: a symbolic link: not followed" in notes
    assert "user/default/workflows/sub: a subfolder: not offered" in notes
    rc, out, err = run(capsys, "import", "copied", "--from-install", str(d), "--no-python", "--workflows")
    assert rc == 0, out + err
    assert "workflows in user/default/workflows/: api.json, my flow (v2).json (copied into" in out
    vdir = forge / "versions" / "copied"
    lock = lockfile.read(vdir / "version.json")
    assert lock["workflows"] == ["workflows/api.json", "workflows/my-flow--v2-.json"]
    assert (vdir / "workflows" / "my-flow--v2-.json").read_bytes() == (wf / "my flow (v2).json").read_bytes()
    assert (vdir / "workflows" / "api.json").read_bytes() == (wf / "api.json").read_bytes()
    rc, _, err = run(capsys, "import", "x", "snap.json", "--workflows")
    assert rc == 2 and "--from-install" in err


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nbody\n")


def test_the_venv_is_evidence_torch_profile_and_differences(forge, tmp_path, capsys, monkeypatch):
    """DIR/.venv read (never run): torch's +cu126 build becomes python.torch cu126 (the PyTorch index in the
    pyproject uv locks), and each required package whose uv.lock version is not the venv's is reported."""
    from comfyver.lock import pylock

    d = make_install(tmp_path / "pod")
    site = d / ".venv" / "lib" / "python3.11" / "site-packages"
    for name, version in {"torch": "2.7.1+cu126", "torchvision": "0.22.1+cu126", "torchaudio": "2.7.1+cu126",
                          "numpy": "1.26.4", "Pillow": "10.4.0", "einops": "0.8.0", "rich": "13.0.0"}.items():
        _dist(site, name, version)
    (site / "evil-1.0.dist-info").mkdir()
    (site / "evil-1.0.dist-info" / "METADATA").symlink_to("/etc/passwd")  # not followed: not a package
    (d / ".venv" / "bin").mkdir()
    (d / ".venv" / "bin" / "python").write_text("#!/bin/sh\ntouch ran\n")  # never executed
    (d / ".venv" / "bin" / "python").chmod(0o755)
    locked = {"torch": "2.7.1+cu126", "torchvision": "0.22.1+cu126", "torchaudio": "2.7.1+cu126", "numpy": "2.1.0",
              "pillow": "10.4.0", "einops": "0.8.1", "scipy": "1.14.0"}
    seen: dict[str, str] = {}

    def fake_uv_lock(vdir, pyproject, reqs, what, timeout=600):  # uv's resolution, offline: the versions above
        seen["pyproject"] = pyproject
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "pyproject.toml").write_text(pyproject)
        (vdir / "uv.lock").write_text("version = 1\n" + "".join(
            f'[[package]]\nname = "{n}"\nversion = "{v}"\n' for n, v in locked.items()))
    monkeypatch.setattr(pylock, "uv_lock", fake_uv_lock)
    rc, out, err = run(capsys, "import", "py", "--from-install", str(d), "--json")
    assert rc == 0, out + err
    lock = lockfile.read(forge / "versions" / "py" / "version.json")
    assert lock["python"]["torch"] == "cu126" and 'name = "pytorch-cu126"' in seen["pyproject"]
    # what ran is what uv is asked to pick: each required package the venv has, at its public version
    assert {"einops==0.8.0", "numpy==1.26.4", "pillow==10.4.0", "torch==2.7.1", "torchaudio==2.7.1",
            "torchvision==0.22.1"} <= set(lock["python"]["constraints"])
    assert not any(c.startswith("rich") for c in lock["python"]["constraints"])  # not required by anything
    assert "constraint-dependencies = [" in seen["pyproject"] and '"numpy==1.26.4",' in seen["pyproject"]
    assert any("constrained to the venv's versions" in n for n in json.loads(out)["notes"])
    py = json.loads(out)["install"]["python"]
    assert py["venv"] == str(d / ".venv") and py["python"] == "python3.11" and py["torch_profile"] == "cu126"
    assert py["torch"] == {"torch": "2.7.1+cu126", "torchaudio": "2.7.1+cu126", "torchvision": "0.22.1+cu126"}
    assert py["differences"] == [{"package": "einops", "installed": "0.8.0", "locked": "0.8.1"},
                                 {"package": "numpy", "installed": "1.26.4", "locked": "2.1.0"},
                                 {"package": "scipy", "installed": None, "locked": "1.14.0"}]
    assert not (d / "ran").exists() and not (forge / "ran").exists()
    rc, out, err = run(capsys, "import", "py2", "--from-install", str(d), "--python-env", str(d / ".venv"))
    assert rc == 0, out + err
    assert "3 required package(s) lock at another version than the venv's" in out
    assert "numpy" in out and "1.26.4" in out and "2.1.0" in out
    assert install_profile_cases() == ["pypi", "cpu", "cu128", None, None]


def test_venv_metadata_with_control_characters_is_shown_escaped(tmp_path):
    """A dist-info's Name or Version is install content: control characters (a terminal escape) come back escaped."""
    from comfyver.lock import installpython

    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    _dist(site, "numpy", "1.26.4\x1b]0;owned\x07")
    _dist(site, "six", "1.16.0")
    info = site / "evil-1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ev\x1b[2Jil\nVersion: 1\n")
    got = installpython.read(tmp_path / ".venv").packages
    assert got["six"] == "1.16.0"
    assert got["numpy"] == ascii("1.26.4\x1b]0;owned\x07") and "\x1b" not in got["numpy"]
    assert not any("\x1b" in k or "\x1b" in v for k, v in got.items()), got


def test_venv_versions_uv_cannot_keep_are_dropped_with_a_note(forge, tmp_path, capsys, monkeypatch):
    """When uv cannot resolve with the venv's versions as constraints, the version is locked without them, says so,
    and lists the differences as before."""
    from comfyver.base.errors import ComfyverError
    from comfyver.lock import pylock

    d = make_install(tmp_path / "pod")
    _dist(d / ".venv" / "lib" / "python3.11" / "site-packages", "numpy", "1.0.0")
    tries: list[bool] = []

    def fake_uv_lock(vdir, pyproject, reqs, what, timeout=600):
        tries.append("constraint-dependencies" in pyproject)
        if tries[-1]:
            raise ComfyverError(f"{what}: the Python requirements cannot be locked:\nno version of numpy==1.0.0 fits")
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "pyproject.toml").write_text(pyproject)
        (vdir / "uv.lock").write_text('version = 1\n[[package]]\nname = "numpy"\nversion = "2.1.0"\n')
    monkeypatch.setattr(pylock, "uv_lock", fake_uv_lock)
    rc, out, err = run(capsys, "import", "pyc", "--from-install", str(d), "--json")
    assert rc == 0, out + err
    assert tries == [True, False]
    lock = lockfile.read(forge / "versions" / "pyc" / "version.json")
    assert "constraints" not in lock["python"]
    res = json.loads(out)
    assert any("cannot all be kept" in n and "numpy==1.0.0" in n for n in res["notes"]), res["notes"]
    assert {"package": "numpy", "installed": "1.0.0", "locked": "2.1.0"} in res["install"]["python"]["differences"]


def install_profile_cases() -> list:
    from comfyver.lock import installpython
    return [installpython.profile(v) for v in ("2.7.1", "2.7.1+cpu", "2.8.0+cu128", "2.7.1+cu118", None)]


def test_an_imported_version_goes_through_the_lock_proof(forge, tmp_path, capsys):
    """The next stage on the import: re-locking the imported version with the probe runs ComfyUI's own node
    loading on its core and packs, and the proof passes (each pack imports, its classes registered)."""
    import sys

    d = make_install(tmp_path / "pod")
    rc, out, err = run(capsys, "import", "pod", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    rc, out, err = run(capsys, "lock", "pod", "--probe", sys.executable, "--no-python", "--offline-registry", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["knowledge"] == "probe" and res["added_nodes"] == [] and res["added_models"] == []
    lock = lockfile.read(forge / "versions" / "pod" / "version.json")
    assert "Unary Image Op" in lock["nodes"]["masquerade-nodes-comfyui"]["provides"]  # registered by ComfyUI itself
    # the same in the import itself (--probe), with the install's workflows proven; one ComfyUI cannot run: nothing
    wf = d / "user" / "default" / "workflows"
    wf.mkdir(parents=True)
    (wf / "masks.json").write_text(json.dumps({"1": {"class_type": "Unary Image Op", "inputs": {
        "image": ["2", 0], "op": "invert"}}, "2": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}))
    rc, out, err = run(capsys, "import", "pod2", "--from-install", str(d), "--no-python", "--workflows", "--probe",
                       sys.executable, "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["knowledge"] == "probe" and res["workflows"] == ["workflows/masks.json"]
    lock = lockfile.read(forge / "versions" / "pod2" / "version.json")
    assert "Unary Image Op" in lock["nodes"]["masquerade-nodes-comfyui"]["provides"]
    (wf / "bad.json").write_text(json.dumps({"1": {"class_type": "NoPackHasThis", "inputs": {}}}))
    rc, out, err = run(capsys, "import", "pod3", "--from-install", str(d), "--no-python", "--workflows", "--probe",
                       sys.executable, "--json")
    assert rc == 1, out + err
    res = json.loads(out)
    assert "nothing was written" in res["error"] and any("NoPackHasThis" in p["item"] for p in res["problems"]), res
    assert not (forge / "versions" / "pod3").exists()
    rc, _, err = run(capsys, "import", "pod4", "--from-install", str(d), "--probe", str(tmp_path / "no-python"))
    assert rc == 2 and "no executable interpreter" in err and not (forge / "versions" / "pod4").exists()


def test_a_model_whose_bytes_are_on_hugging_face_gets_that_source(forge, tmp_path, capsys, servers):
    """Models are looked up by their sha256 (sources/modelsearch.py; here a Hub stand-in): a file with the very bytes
    becomes the model's source, still pinned by sha256 and size; a file of the same name with other bytes does not;
    the rest stay local files, and an unreachable service is noted."""
    from tests.test_modelsearch import HFHub, commit_of

    d = make_install(tmp_path / "pod")
    same = (d / "models" / "loras" / "a.safetensors").read_bytes()
    servers(hf=HFHub({"acme/a": {"downloads": 10, "files": {"loras/a.safetensors": same}},
                      "acme/base": {"downloads": 99, "files": {"base.safetensors": b"other bytes"}}}), civitai=None)
    rc, out, err = run(capsys, "import", "pod", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    lock = lockfile.read(forge / "versions" / "pod" / "version.json")
    a = lock["models"]["loras/a.safetensors"]
    assert a["original"]["url"] == f"hf://acme/a@{commit_of('acme/a')}/loras/a.safetensors"
    assert (a["locked"]["sha256"], a["locked"]["size"]) == (expected_sha("loras/a.safetensors"), MODELS["loras/a.safetensors"])
    assert lock["models"]["checkpoints/sd/base.safetensors"]["locked"]["url"].startswith("file://")  # other bytes
    notes = "\n".join(json.loads(out)["notes"])
    assert "model loras/a.safetensors: the file with its sha256 is on" in notes
    assert "could not reach civitai" in notes.lower() and "3 model(s) recorded as local files" in notes


def test_a_model_of_several_gb_is_hashed_once(forge, tmp_path, capsys):
    """A 3 GB model (sparse: its bytes are zeros) is hashed to the right sha256; a second import hashes nothing."""
    d = make_install(tmp_path / "pod")
    big = d / "models" / "diffusion_models" / "big.safetensors"
    big.parent.mkdir(parents=True, exist_ok=True)
    size = 3 * 10**9
    with open(big, "wb") as fh:
        fh.truncate(size)
    os.utime(big, ns=(OLD, OLD))
    h, zeros = hashlib.sha256(), bytes(1 << 24)
    for _ in range(size // len(zeros)):
        h.update(zeros)
    h.update(zeros[:size % len(zeros)])
    rc, out, err = run(capsys, "import", "big", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    m = lockfile.read(forge / "versions" / "big" / "version.json")["models"]["diffusion_models/big.safetensors"]
    assert (m["locked"]["sha256"], m["locked"]["size"]) == (h.hexdigest(), size)
    rc, out, err = run(capsys, "import", "big2", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0 and json.loads(out)["install"]["hash"]["hashed"] == 0, out + err


def test_the_installs_own_git_config_runs_no_program(forge, tmp_path, capsys):
    """A filter driver in a pack's (or the core's) own .git/config, reached through an included file and bound by
    the checkout's info/attributes: `git status` would run its clean command on a file whose stat changed. The
    import switches the install's drivers off: nothing runs, nothing in DIR is written."""
    d = make_install(tmp_path / "pod")
    ran = tmp_path / "ran"
    evil = tmp_path / "evil.gitconfig"
    evil.write_text(f'[filter "x"]\n\tclean = "touch {ran}; cat"\n\tprocess = "touch {ran}"\n')
    for repo in (d, d / "custom_nodes" / "masquerade-nodes-comfyui"):
        with open(repo / ".git" / "config", "a") as fh:
            fh.write(f"[include]\n\tpath = {evil}\n")
        (repo / ".git" / "info").mkdir(exist_ok=True)
        (repo / ".git" / "info" / "attributes").write_text("*.py filter=x\n")
        for f in repo.glob("*.py"):
            os.utime(f)  # a changed stat: git status reads the file again, through the filter
    before = listing(d)
    rc, out, err = run(capsys, "import", "gf", "--from-install", str(d), "--no-python", "--json")
    assert not ran.exists(), "the install's filter driver ran"
    assert rc == 0, out + err
    assert listing(d) == before


def test_a_hostile_extra_model_paths_yaml_is_named_entry_by_entry(forge, tmp_path, capsys, monkeypatch):
    """A NUL byte, control characters in a section or a path, a folder key that is a path, and a base_path that
    expands a secret: each a problem naming its entry (the secret never shown), all in one run, no traceback."""
    d = make_install(tmp_path / "pod")
    monkeypatch.setenv("HF_TOKEN", "hf_verysecretvalue123")
    (d / "extra_model_paths.yaml").write_text(
        'nul:\n  checkpoints: "x\\0y"\n'
        '"sec\\nfake: line":\n  vae: /tmp\n'
        'esc:\n  loras: "/nonexist\\e[31mRED"\n'
        'key:\n  "../../tmp/evil": /tmp\n'
        'sec:\n  base_path: /tmp/$HF_TOKEN\n  vae: x\n')
    rc, out, err = run(capsys, "import", "y", "--from-install", str(d), "--no-python", "--json")
    assert rc == 1, out + err
    assert "hf_verysecretvalue123" not in out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert problems == {
        "extra_model_paths.yaml nul.checkpoints": "the path has a NUL byte",
        "extra_model_paths.yaml 'sec\\nfake: line'": "the section: its name has control characters",
        "extra_model_paths.yaml esc.loras": "the path '/nonexist\\x1b[31mRED' has control characters",
        "extra_model_paths.yaml key.../../tmp/evil": "not a model folder name (letters, digits, _ . -; no path)",
        "extra_model_paths.yaml sec.base_path":
            "the path expands an environment variable that holds a secret: name the folder itself"}


def test_a_model_rewritten_with_its_mtime_set_back_is_hashed_again(forge, tmp_path, capsys):
    """`cp -p`, `rsync --inplace -t`: same size, same mtime, other bytes. The stat cache keys on ctime too (which
    utime cannot set back), so the second import hashes the file again and records its new sha256."""
    d = make_install(tmp_path / "pod")
    rc, out, err = run(capsys, "import", "one", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    f = d / "models" / "loras" / "a.safetensors"
    st = f.stat()
    new = b"B" * st.st_size
    f.write_bytes(new)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, out, err = run(capsys, "import", "two", "--from-install", str(d), "--no-python", "--json")
    assert rc == 0, out + err
    assert json.loads(out)["install"]["hash"]["hashed"] == 1
    m = lockfile.read(forge / "versions" / "two" / "version.json")["models"]["loras/a.safetensors"]
    assert m["locked"]["sha256"] == hashlib.sha256(new).hexdigest()


def test_a_workflow_file_that_is_not_json_is_left_out_not_copied(forge, tmp_path, capsys):
    """--workflows copies only JSON workflows: a version with a file `check` refuses is never written."""
    d = make_install(tmp_path / "pod")
    wf = d / "user" / "default" / "workflows"
    wf.mkdir(parents=True)
    (wf / "good.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    (wf / "junk.json").write_bytes(b"\xff\xfe not json")
    rc, out, err = run(capsys, "import", "wj", "--from-install", str(d), "--no-python", "--workflows", "--json")
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["workflows"] == ["workflows/good.json"]
    assert "left out: user/default/workflows/junk.json: not a JSON workflow (an object)" in res["notes"]
    assert not (forge / "versions" / "wj" / "workflows" / "junk.json").exists()


def test_an_extra_model_paths_yaml_too_large_to_read_is_named_not_read_in_part(forge, tmp_path, capsys):
    d = make_install(tmp_path / "pod")
    (d / "extra_model_paths.yaml").write_text("#" + "x" * (1 << 20) + "\nvol:\n  vae: /etc\n")
    rc, out, err = run(capsys, "import", "big", "--from-install", str(d), "--no-python", "--json")
    assert rc == 1, out + err
    problems = {p["item"]: p["problem"] for p in json.loads(out)["problems"]}
    assert "larger than 1048576 bytes" in problems["extra_model_paths.yaml"]
