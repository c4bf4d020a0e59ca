"""The torch family on the final uv.lock (issue 28): torch, torchvision and torchaudio of one release (patch and
CUDA build included), `--pip` pins of any package in pyproject.toml and uv.lock, and a failed Python lock that
names the pack and the platform lever. Real uv over a local flat index of tiny wheels (tests/support/fakewheels)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.lock import pylock

from tests.support import fakewheels

PYPI = {"id": "t", "python": {"requires": "==3.11.*", "torch": "pypi"}}


def _reqs(**by_who: str) -> pylock.Requirements:
    r = pylock.Requirements()
    for who, text in by_who.items():
        r.add(who, text, "requirements.txt")
    return r


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict], str]:
    """-> make(packages): the only index uv sees (no PyPI)."""
    root = tmp_path / "index"

    def make(packages: dict) -> str:
        url = fakewheels.index(root, packages)
        monkeypatch.setenv("UV_DEFAULT_INDEX", url)
        for var in ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_FIND_LINKS"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
        return url
    return make


def _lock(tmp_path: Path, r: pylock.Requirements, lock: dict = PYPI) -> tuple[Path, str]:
    deps, overrides, _ = pylock.merge(r)
    text = pylock.render(lock, deps, overrides)
    vdir = tmp_path / "versions" / "t"
    pylock.uv_lock(vdir, text, r, "version t")
    return vdir, text


def _versions(vdir: Path) -> dict[str, str]:
    return pylock.family((vdir / "uv.lock").read_text())


def _lock_text(**versions: str) -> str:
    return "".join(f'[[package]]\nname = "{n}"\nversion = "{v}"\n\n' for n, v in versions.items())


# ------------------------------------------------------------------ the check on a uv.lock

@pytest.mark.parametrize("versions,problem", [
    ({"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}, None),
    ({"torch": "2.9.1+cu128", "torchvision": "0.24.1+cu128", "torchaudio": "2.9.1+cu128"}, None),
    # the lock: same minor, another patch -> libtorchaudio.so: undefined symbol
    ({"torch": "2.11.0", "torchaudio": "2.11.1"}, "torchaudio 2.11.1 is built for torch 2.11.1, but torch is 2.11.0"),
    ({"torch": "2.5.1", "torchvision": "0.20.0"}, "torchvision 0.20.0 is built for torch 2.5.0, but torch is 2.5.1"),
    # one release, two CUDA builds
    ({"torch": "2.11.0+cu128", "torchaudio": "2.11.0+cu126"},
     "torchaudio 2.11.0+cu126 is a cu126 build, but torch is 2.11.0+cu128"),
])
def test_family_problem_compares_the_whole_version(versions: dict[str, str], problem: str | None) -> None:
    text = _lock_text(**versions)
    assert pylock.family_problem(text) == problem
    if problem:
        fix = pylock.family_fix(text)
        torch = versions["torch"]
        assert "--pip" in fix and torch in fix  # the fix names the pins that pair the family with the locked torch


def test_family_candidates_newest_release_first_then_older_patches() -> None:
    text = _lock_text(torch="2.12.0", torchvision="0.27.0", torchaudio="2.11.1")
    assert pylock.family_candidates(text)[:3] == [
        ["torch==2.12.0", "torchaudio==2.12.0", "torchvision==0.27.0"],
        ["torch==2.11.1", "torchaudio==2.11.1", "torchvision==0.26.1"],
        ["torch==2.11.0", "torchaudio==2.11.0", "torchvision==0.26.0"]]


# ------------------------------------------------------------------ real uv

# torchvision pins its torch (as PyPI's wheels do); torchaudio 2.11.x does not (PyPI's newest do not either)
FAMILY = {"torch": ["2.11.0", "2.12.0"],
          "torchvision": {"0.26.0": ["torch==2.11.0"], "0.27.0": ["torch==2.12.0"]},
          "torchaudio": {"2.11.0": [], "2.11.1": ["torch"]}}


def test_uv_lock_pairs_the_family_to_one_release(tmp_path: Path, local_index) -> None:
    """uv alone picks torch 2.12.0 with torchaudio 2.11.1; pinning by minor alone would give torch 2.11.0 with
    torchaudio 2.11.1 (the issue's broken lock). The final uv.lock holds one release of all three."""
    local_index(FAMILY)
    vdir, _ = _lock(tmp_path, _reqs(comfyui="torch\ntorchvision\ntorchaudio\n"))
    assert _versions(vdir) == {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}
    assert pylock.family_problem((vdir / "uv.lock").read_text()) is None


def test_uv_lock_pairs_the_cuda_build(tmp_path: Path, local_index) -> None:
    local_index({"torch": ["2.11.0+cu128"], "torchaudio": ["2.11.0+cu128", "2.11.0+cu130"]})
    vdir, _ = _lock(tmp_path, _reqs(comfyui="torch\ntorchaudio\n"))
    assert _versions(vdir) == {"torch": "2.11.0+cu128", "torchaudio": "2.11.0+cu128"}


def test_a_family_that_cannot_pair_is_a_problem_naming_both_and_the_fix(tmp_path: Path, local_index) -> None:
    local_index({"torch": ["2.12.0"], "torchaudio": {"2.11.1": ["torch"]}})
    with pytest.raises(ComfyverError) as ei:
        _lock(tmp_path, _reqs(comfyui="torch\ntorchaudio\n"))
    msg, hint = ei.value.message, ei.value.hint or ""
    assert "torchaudio 2.11.1" in msg and "torch is 2.12.0" in msg
    assert "--pip 'torchaudio==2.12.0'" in hint
    assert not (tmp_path / "versions" / "t" / "uv.lock").exists()


def test_pip_pin_of_a_family_member_reaches_pyproject_and_uv_lock(tmp_path: Path, local_index) -> None:
    """`lock --pip 'torchaudio==2.11.0'` (python.extra) wins over ComfyUI's bare `torchaudio`."""
    local_index({**FAMILY, "numpy": ["2.0.0"]})
    r = _reqs(comfyui="torch\ntorchaudio\nnumpy\n")
    r.add(pylock.EXTRA, "torchaudio==2.11.0\n", "version.json")
    vdir, text = _lock(tmp_path, r)
    assert "torchaudio==2.11.0" in tomllib.loads(text)["project"]["dependencies"]
    written = (vdir / "pyproject.toml").read_text()
    assert "torchaudio==2.11.0" in tomllib.loads(written)["project"]["dependencies"]
    name, _ = pylock.project_requires(written)
    assert "torchaudio==2.11.0" in (pylock.locked_requires((vdir / "uv.lock").read_text(), name) or [])
    assert _versions(vdir)["torchaudio"] == "2.11.0" and _versions(vdir)["torch"] == "2.11.0"


def test_pip_pin_of_any_package_wins_over_nodes_and_core() -> None:
    r = _reqs(comfyui="numpy>=1.25\n", some_pack="numpy<3\n")
    r.add(pylock.EXTRA, "numpy==2.0.0\n", "version.json")
    deps, _, notes = pylock.merge(r)
    assert "numpy==2.0.0" in deps and not any(d.startswith("numpy>") for d in deps)
    assert any("numpy==2.0.0" in n and "--pip" in n for n in notes)


# ------------------------------------------------------------------ platforms (CUDA profiles: Linux x86_64 only)

LINUX_ENV = "sys_platform == 'linux' and platform_machine == 'x86_64'"


@pytest.mark.parametrize("profile,platforms", [("cu128", ["linux-x86_64"]), ("cu126", ["linux-x86_64"]),
                                               ("cpu", ["linux-x86_64"]), ("pypi", ["linux-x86_64", "macos-arm64"])])
def test_cuda_profiles_lock_linux_only_unless_platforms_are_asked_for(profile: str, platforms: list[str]) -> None:
    assert pylock.default_platforms(profile) == platforms
    lock = {"id": "t", "python": {"requires": "==3.11.*", "torch": profile, "platforms": platforms}}
    envs = tomllib.loads(pylock.render(lock, ["numpy"], []))["tool"]["uv"]["environments"]
    assert envs[0] == LINUX_ENV and len(envs) == len(platforms)
    asked = {"id": "t", "python": {"requires": "==3.11.*", "torch": "cu128",
                                   "platforms": ["linux-x86_64", "macos-arm64"]}}
    assert len(tomllib.loads(pylock.render(asked, ["numpy"], []))["tool"]["uv"]["environments"]) == 2


def test_a_platform_conflict_names_the_pack_and_the_platform_lever(tmp_path: Path) -> None:
    """Real uv over PyPI metadata: onnxruntime-gpu (comfyui_controlnet_aux) has no macOS arm64 wheels; a lock that
    targets macOS fails, and the hint says who asked and which flag locks for Linux only."""
    r = _reqs(comfyui="six\n", comfyui_controlnet_aux="onnxruntime-gpu\n")
    lock = {"id": "t", "python": {"requires": "==3.11.*", "torch": "cu128",
                                  "platforms": ["linux-x86_64", "macos-arm64"]}}
    with pytest.raises(ComfyverError) as ei:
        _lock(tmp_path, r, lock)
    hint = ei.value.hint or ""
    assert "onnxruntime-gpu" in hint and "comfyui_controlnet_aux" in hint
    assert "--platform linux-x86_64" in hint and "macOS arm64" in hint
    # and for Linux only (the CUDA profiles' default) it locks
    lock["python"]["platforms"] = ["linux-x86_64"]
    vdir, _ = _lock(tmp_path, r, lock)
    assert "onnxruntime-gpu" in (vdir / "uv.lock").read_text()
