"""Python lock: merging rules, torch profiles, and `uv lock` conflicts named by node (real uv, PyPI metadata)."""

from __future__ import annotations

import tomllib

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.lock import pylock

LOCK = {"id": "t", "python": {"requires": "==3.11.*", "torch": "cu128"}}


def reqs(**by_who):
    r = pylock.Requirements()
    for who, text in by_who.items():
        r.add(who, text, "requirements.txt")
    return r


def test_core_wins_and_fixups():
    r = reqs(comfyui="torch\nnumpy>=1.25\nPillow\n",
             a="numpy<2  # old\nopencv-python>=4.5\ncomfy\ntorch==2.0.1\n--extra-index-url https://x\ngit+https://h/x.git\n",
             b="opencv-python-headless\nscikit-image>=0.20\nrequests[socks]\n",
             c="scikit-image<0.30\nrequests>=2\nopencv-contrib-python\n")
    deps, overrides, notes = pylock.merge(r)
    assert "numpy>=1.25" in deps and "torch" in deps and "comfy" not in deps
    assert "scikit-image<0.30,>=0.20" in deps and "requests[socks]>=2" in deps
    assert "opencv-contrib-python-headless>=4.5" in deps and not any(d.startswith("opencv-python") for d in deps)
    assert set(overrides) == {"opencv-python; sys_platform == 'never'", "opencv-python-headless; sys_platform == 'never'",
                              "opencv-contrib-python; sys_platform == 'never'"}
    joined = "\n".join(notes)
    assert "node a: asks for numpy<2; ComfyUI's numpy>=1.25 wins" in joined
    assert "stray package 'comfy' (required by a)" in joined
    assert "--extra-index-url" in joined and "git+https://h/x.git" in joined


@pytest.mark.parametrize("profile,index", [("cu128", None), ("pypi", None), ("cpu", "https://download.pytorch.org/whl/cpu"),
                                           ("cu126", "https://download.pytorch.org/whl/cu126")])
def test_torch_profiles(profile, index):
    lock = {"id": "t", "python": {"requires": "==3.11.*", "torch": profile}}
    doc = tomllib.loads(pylock.render(lock, ["torch", "numpy"], []))
    assert doc["project"]["dependencies"] == ["torch", "numpy"]
    assert doc["tool"]["uv"]["workspace"] == {"members": []}
    assert doc["tool"]["uv"]["environments"][0] == "sys_platform == 'linux' and platform_machine == 'x86_64'"
    assert len(doc["tool"]["uv"]["environments"]) == (2 if index is None else 1)  # + macOS arm64 from PyPI
    if index is None:
        assert "index" not in doc["tool"]["uv"] and "sources" not in doc["tool"]["uv"]
    else:
        assert doc["tool"]["uv"]["index"] == [{"name": f"pytorch-{profile}", "url": index, "explicit": True}]
        assert doc["tool"]["uv"]["sources"]["torchvision"] == {"index": f"pytorch-{profile}"}


def test_conflict_names_the_nodes(tmp_path):
    r = reqs(comfyui="six\n", node_one="packaging==21.0\n", node_two="packaging>=23\n")
    deps, overrides, _ = pylock.merge(r)
    text = pylock.render(LOCK, deps, overrides)
    vdir = tmp_path / "versions" / "t"
    with pytest.raises(ComfyverError) as ei:
        pylock.uv_lock(vdir, text, r, "version t")
    msg = ei.value.message
    assert "packaging is required by: node_one (packaging==21.0); node_two (packaging>=23)" in msg
    assert not (vdir / "uv.lock").exists() and not (vdir / "pyproject.toml").exists()  # nothing half-written


def test_uv_lock_small_set_hashes_every_wheel(tmp_path):
    r = reqs(comfyui="six==1.16.0\n", a="packaging>=23\n")
    deps, overrides, _ = pylock.merge(r)
    text = pylock.render(LOCK, deps, overrides)
    vdir = tmp_path / "versions" / "t"
    pylock.uv_lock(vdir, text, r, "version t")
    doc = tomllib.loads((vdir / "uv.lock").read_text())
    pkgs = {p["name"]: p for p in doc["package"]}
    assert pkgs["six"]["version"] == "1.16.0"
    assert all(w["hash"].startswith("sha256:") for p in pkgs.values() for w in p.get("wheels", []))
    name, requires = pylock.project_requires(text)
    assert pylock.locked_requires((vdir / "uv.lock").read_text(), name) == requires


def test_collect_reads_git_and_registry_nodes(git_server, http_server, tmp_path):
    import io
    import zipfile

    from comfyver.sources import gitsource, registry

    from tests.support.gitserver import make_repo

    make_repo(tmp_path / "core", {"requirements.txt": "torch\nnumpy\n",
                                  "app/frontend_management.py": "import json\nimport requests\n"}, "c")
    make_repo(tmp_path / "pp", {"pyproject.toml": "[project]\nname='x'\ndependencies=['einops>=0.6']\n"}, "p")
    core_url, pp_url = git_server.publish(tmp_path / "core", "core"), git_server.publish(tmp_path / "pp", "pp")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pack-1.0/__init__.py", "")
        z.writestr("pack-1.0/requirements.txt", "rich>=13\n")
    (http_server.files_root / "pack.zip").write_bytes(buf.getvalue())
    sri, strip = registry.unpack_and_hash(http_server.files_root / "pack.zip", "t")
    lock = {"id": "t", "comfyui": {"locked": gitsource.lock({"type": "git", "url": core_url, "ref": "main"}, "core")},
            "nodes": {"pp": {"locked": gitsource.lock({"type": "git", "url": pp_url, "ref": "main"}, "pp")},
                      "zipped": {"locked": {"type": "zip", "url": f"{http_server.url}/pack.zip", "hash": sri,
                                            "stripRoot": strip}}}}
    r = pylock.collect(lock)
    assert {k: [w for w, _ in v] for k, v in r.by_package.items()} == {
        "torch": ["comfyui"], "numpy": ["comfyui"], "requests": ["comfyui"], "einops": ["pp"], "rich": ["zipped"]}
    assert any("imports 'requests' without listing it" in n for n in r.notes)
    # a tampered archive is refused, naming the node
    lock["nodes"]["zipped"]["locked"]["hash"] = "sha256-" + "A" * 43 + "="
    with pytest.raises(ComfyverError, match=r"node zipped: archive .* has hash"):
        pylock.collect(lock)


def _lock_text(**versions):
    return "".join(f'[[package]]\nname = "{n}"\nversion = "{v}"\n\n' for n, v in versions.items())


@pytest.mark.parametrize("versions,problem", [
    ({"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}, None),
    ({"torch": "2.14.1", "torchvision": "0.29.1"}, None),
    ({"torch": "2.15.0", "torchvision": "0.29.2", "torchaudio": "2.11.0"},
     "torchaudio 2.11.0 is built for torch 2.11.0; torchvision 0.29.2 is built for torch 2.14.2, but torch is 2.15.0"),
    ({"torchvision": "0.26.0"}, None),  # no torch: nothing to pair with
])
def test_torch_family_pairing(versions, problem):
    text = _lock_text(**versions)
    assert pylock.family_problem(text) == problem
    if problem:
        # one exact release of all three, the locked torch's first (tests/test_pylock_family.py: the candidates)
        assert pylock.family_pins(text) == ["torch==2.15.0", "torchaudio==2.15.0", "torchvision==0.30.0"]


def test_family_pins_join_the_versions_own_constraints_in_one_key():
    """python.constraints (an imported venv's versions) and the torch family's pins are one constraint-dependencies
    key (TOML refuses a second); taking the pins out gives back what generate wrote."""
    import tomllib

    r = reqs(comfyui="torch\nnumpy\n")
    lock = {"id": "t", "python": {"requires": "==3.11.*", "torch": "pypi", "constraints": ["numpy==1.26.4"]}}
    deps, overrides, _ = pylock.merge(r)
    text = pylock.render(lock, deps, overrides)
    pinned = pylock.with_family_pins(text, ["torch==2.7.1", "torchvision==0.22.1"])
    assert tomllib.loads(pinned)["tool"]["uv"]["constraint-dependencies"] == [
        "torch==2.7.1", "torchvision==0.22.1", "numpy==1.26.4"]
    assert pylock.without_family_pins(pinned) == text
    assert pylock.with_family_pins(pinned, ["torch==2.8.0"]).count("torch==") == 1  # pins replaced, not added
    plain = pylock.render({"id": "t", "python": {"requires": "==3.11.*", "torch": "pypi"}}, deps, overrides)
    alone = pylock.with_family_pins(plain, ["torch==2.7.1"])
    assert tomllib.loads(alone)["tool"]["uv"]["constraint-dependencies"] == ["torch==2.7.1"]
    assert pylock.without_family_pins(alone) == plain


def test_uv_lock_pins_the_torch_family_to_one_torch(tmp_path):
    """Real uv over PyPI: left alone, uv pairs the newest torch with a torchvision and a torchaudio built for older
    ones (their metadata allows it); uv_lock locks again with the family pinned to one torch."""
    r = reqs(comfyui="torch\ntorchvision\ntorchaudio\n")
    lock = {"id": "t", "python": {"requires": "==3.11.*", "torch": "pypi"}}
    deps, overrides, _ = pylock.merge(r)
    text = pylock.render(lock, deps, overrides)
    vdir = tmp_path / "versions" / "t"
    pylock.uv_lock(vdir, text, r, "version t")
    locked = (vdir / "uv.lock").read_text()
    assert pylock.family_problem(locked) is None, pylock.family(locked)
    written = (vdir / "pyproject.toml").read_text()
    assert "constraint-dependencies" in written and pylock.without_family_pins(written) == text
    name, requires = pylock.project_requires(written)
    assert pylock.locked_requires(locked, name) == requires


def test_requirements_compare_by_meaning_not_by_the_order_uv_writes_a_markers_terms():
    """issue 28: the proof environment's corpus lock of InstantID failed `check` ("uv.lock was not made from this
    pyproject.toml") because uv.lock wrote onnxruntime-gpu's marker terms in another order."""
    ours = ['onnxruntime-gpu; sys_platform != "darwin" and platform_machine == "x86_64"', "numpy>=1.25"]
    uvs = ['numpy>=1.25', 'onnxruntime-gpu; platform_machine == "x86_64" and sys_platform != "darwin"']
    assert sorted(ours) != sorted(uvs)
    assert pylock.requires_key(ours) == pylock.requires_key(uvs)
    assert pylock.requires_key(['onnxruntime-gpu; sys_platform != "darwin"']) != pylock.requires_key(ours[:1])
    assert pylock.requires_key(["numpy>=1.26"]) != pylock.requires_key(["numpy>=1.25"])
