"""issue 28, revisions that fit: a pack the lock chose whose newest revision does not import on the locked core is
locked at its newest earlier release that does (lock/fit.py), proven by ComfyUI's own node loading (the probe, real
ComfyUI 0.3.75 on the CPU); a revision the user pinned is never moved."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from comfyver.base import lockfile
from comfyver.lock import fit, nodemap

from tests.support import comfyui
from tests.support.gitserver import git, make_repo
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)


def string_node(cls: str) -> str:
    """The source of a node class `cls` taking a STRING and returning it (an output node)."""
    return (f"class {cls}:\n"
            "    @classmethod\n"
            "    def INPUT_TYPES(s):\n"
            "        return {'required': {'text': ('STRING', {})}}\n"
            "    RETURN_TYPES = ('STRING',)\n"
            "    FUNCTION = 'f'\n"
            "    OUTPUT_NODE = True\n"
            "    def f(self, text):\n"
            "        return (text,)\n")


NODE = string_node("FitNode")
OLD = {"__init__.py": NODE + "NODE_CLASS_MAPPINGS = {'FitNode': FitNode}\n"}
# the newest release needs an API of a newer core than the locked one
NEW = {"__init__.py": "from comfy_api.v99_newer_core import io  # noqa\n" + NODE
       + "NODE_CLASS_MAPPINGS = {'FitNode': FitNode}\n"}
NEWER_LACKING = {"__init__.py": NODE + "NODE_CLASS_MAPPINGS = {'OtherNode': FitNode}\n"}


def _setup(env, tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    core = tmp_path / "RealComfyUI"
    shutil.copytree(comfyui.source(), core, ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", "-b", "master", cwd=core)
    git("add", "-A", cwd=core)
    git("commit", "-q", "-m", "ComfyUI 0.3.75", cwd=core)
    git("tag", "v0.3.75", cwd=core)
    core_url = env.git_server.publish(core, "RealComfyUI")
    revs = {"v1.0.0": make_repo(tmp_path / "ComfyUI-Fit", OLD, "works", tag="v1.0.0"),
            "v1.1.0": make_repo(tmp_path / "ComfyUI-Fit", NEWER_LACKING, "renamed the class", tag="v1.1.0"),
            "v2.0.0": make_repo(tmp_path / "ComfyUI-Fit", NEW, "needs a newer core", tag="v2.0.0")}
    url = env.git_server.publish(tmp_path / "ComfyUI-Fit", "ComfyUI-Fit")
    revs["url"] = url
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({url: [["FitNode", "OtherNode"], {"title_aux": "Fit"}]}))
    nodemap.manager.cache_clear()
    wf = tmp_path / "fit.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "FitNode", "mode": 0, "widgets_values": ["hi"]}],
                              "links": []}))
    return wf, core_url, revs


def test_candidates_are_earlier_releases_newest_first_then_the_saved_commit(env, tmp_path):
    _, _, revs = _setup(env, tmp_path)
    url = revs["url"]
    got = fit.candidates(url, revs["v2.0.0"], "a" * 40, "node x")
    assert [c.ref for c in got] == ["v1.1.0", "v1.0.0", "a" * 40]
    # locked at a commit no release has (a branch head): every release is a candidate
    assert [c.ref for c in fit.candidates(url, "b" * 40, None, "node x")] == ["v2.0.0", "v1.1.0", "v1.0.0"]
    # the default branch moved past the newest release: its head first
    make_repo(tmp_path / "ComfyUI-Fit", OLD, "after the release")
    env.git_server.publish(tmp_path / "ComfyUI-Fit", "ComfyUI-Fit")
    got = fit.candidates(url, revs["v2.0.0"], None, "node x")
    assert [c.ref for c in got] == ["main", "v1.1.0", "v1.0.0"] and "default branch head" in got[0].why


def test_a_chosen_pack_that_does_not_import_on_the_core_is_locked_at_an_earlier_release(env, capsys, tmp_path):
    wf, core_url, revs = _setup(env, tmp_path)
    args = ["lock", "fit", "--workflow", str(wf), "--comfyui-url", core_url, "--comfyui-ref", "v0.3.75",
            "--offline-registry", "--no-python", "--json", "--probe", sys.executable]
    rc, out, err = run(capsys, *args)
    assert rc == 0, out + err
    res = json.loads(out)
    [note] = [n for n in res["notes"] if "does not import on the locked ComfyUI" in n]
    assert f"{revs['v2.0.0'][:12]} does not import" in note and "v99_newer_core" in note
    assert "locked release v1.0.0" in note, note
    assert "v1.1.0: imports but lacks FitNode" in note
    assert "--comfyui-ref" in note
    node = lockfile.read(env.root / "versions" / "fit" / "version.json")["nodes"]["comfyui-fit"]
    assert node["original"] == {"type": "git", "url": revs["url"], "ref": "v1.0.0"}
    assert node["locked"]["rev"] == revs["v1.0.0"] and node["provides"] == ["FitNode"]
    assert res["knowledge"] == "probe"
    assert res["proof_seconds"] > 0  # the probes ran (lock --json reports the proof's own cost)


def test_a_revision_the_user_pinned_is_never_moved(env, capsys, tmp_path):
    wf, core_url, revs = _setup(env, tmp_path)
    rc, out, err = run(capsys, "lock", "pinned", "--workflow", str(wf), "--comfyui-url", core_url, "--comfyui-ref",
                       "v0.3.75", "--node", f"{revs['url']}@v2.0.0", "--offline-registry", "--no-python", "--json",
                       "--probe", sys.executable)
    assert rc == 1, out + err
    res = json.loads(out)
    assert [p["item"] for p in res["problems"]] == ["class FitNode"], res
    # a failed lock still prints what the steps learned: here why the class is missing and the levers
    assert any("fails to import" in n and "v99_newer_core" in n and "--comfyui-ref" in n for n in res["notes"])
    assert not (env.root / "versions" / "pinned" / "version.json").exists()
    # written anyway (--no-verify): `check` reuses the probe the lock ran (no uv.lock here, no realized version) and
    # fails it as the lock's proof did; the static scan alone finds FitNode in the pack's source and passed it
    rc, out, err = run(capsys, "lock", "pinned", "--workflow", str(wf), "--comfyui-url", core_url, "--comfyui-ref",
                       "v0.3.75", "--node", f"{revs['url']}@v2.0.0", "--offline-registry", "--no-python", "--json",
                       "--probe", sys.executable, "--no-verify")
    assert rc == 0, out + err
    rc, out, _ = run(capsys, "check", "pinned", "--no-python", "--json")
    probs = json.loads(out)["versions"]["pinned"]["problems"]
    assert rc == 1 and [p["item"] for p in probs] == ["class FitNode"], out
    assert "(proof, from the probe)" in probs[0]["problem"]


def test_a_newest_release_years_behind_the_branch_gives_way_to_its_head(env, capsys, tmp_path):
    """comfyui-inpaint-nodes' only tag v1.0.0 (2024) does not import on ComfyUI 0.3.75; its default branch head does."""
    wf, core_url, _ = _setup(env, tmp_path)
    work = tmp_path / "ComfyUI-Old"
    make_repo(work, NEW, "old API", tag="v1.0.0")
    head = make_repo(work, OLD, "ported to the new API")
    url = env.git_server.publish(work, "ComfyUI-Old")
    mgr = Path(__import__("os").environ["COMFYVER_MANAGER_DATA"])
    (mgr / "extension-node-map.json").write_text(json.dumps({url: [["FitNode"], {"title_aux": "Old"}]}))
    nodemap.manager.cache_clear()
    rc, out, err = run(capsys, "lock", "old", "--workflow", str(wf), "--comfyui-url", core_url, "--comfyui-ref",
                       "v0.3.75", "--offline-registry", "--no-python", "--json", "--probe", sys.executable)
    assert rc == 0, out + err
    assert any("locked the default branch head" in n for n in json.loads(out)["notes"]), out
    node = lockfile.read(env.root / "versions" / "old" / "version.json")["nodes"]["comfyui-old"]
    assert node["original"]["ref"] == "main" and node["locked"]["rev"] == head


def test_a_registry_pack_that_does_not_import_is_locked_at_an_earlier_published_version(env, capsys, tmp_path,
                                                                                        monkeypatch):
    """A pack the workflow saved by cnr_id at a version that needs a newer core: its earlier published versions are
    tried newest first (`GET /nodes/{id}/versions`); one whose supported_comfyui_version excludes the locked core is
    not tried, one that lacks the class is passed over, the first that imports and registers it is locked."""
    import io
    import zipfile

    _, core_url, _ = _setup(env, tmp_path)
    listed = []
    for version, files, supported in (("2.0.0", NEW, None), ("1.5.0", OLD, ">=0.4.0"), ("1.1.0", NEWER_LACKING, None),
                                      ("1.0.0", OLD, ">=0.3.0"), ("0.9.0", OLD, None)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for path, text in files.items():
                z.writestr(f"comfyui-fit/{path}", text)
        (env.http.files_root / f"fit-{version}.zip").write_bytes(buf.getvalue())
        info = {"id": f"v-{version}", "version": version, "downloadUrl": f"{env.http.url}/fit-{version}.zip",
                "deprecated": False, "status": "NodeVersionStatusActive", "supported_comfyui_version": supported}
        env.http.routes[f"/nodes/comfyui-fit/versions/{version}"] = info
        listed.append(info)
    env.http.routes["/nodes/comfyui-fit/versions"] = listed
    monkeypatch.setenv("COMFY_REGISTRY_URL", env.http.url)
    wf = tmp_path / "reg.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "FitNode", "mode": 0, "widgets_values": ["hi"],
                                         "properties": {"cnr_id": "comfyui-fit", "ver": "2.0.0"}}], "links": []}))
    # no --comfyui-ref: `latest` locks the core at its newest tag, the release the registry's ranges are read against
    rc, out, err = run(capsys, "lock", "reg", "--workflow", str(wf), "--comfyui-url", core_url,
                       "--offline-registry", "--no-python", "--json", "--probe", sys.executable)
    assert rc == 0, out + err
    [note] = [n for n in json.loads(out)["notes"] if "does not import on the locked ComfyUI" in n]
    assert "version 2.0.0 does not import" in note and "locked registry version 1.0.0" in note, note
    assert "1.5.0: the registry says it supports ComfyUI >=0.4.0, not 0.3.75" in note, note
    assert "1.1.0: imports but lacks FitNode" in note, note
    node = lockfile.read(env.root / "versions" / "reg" / "version.json")["nodes"]["comfyui-fit"]
    assert node["original"] == {"type": "registry", "id": "comfyui-fit", "version": "1.0.0"}
    assert node["locked"]["version"] == "1.0.0" and node["provides"] == ["FitNode"]


def test_the_core_release_is_its_tag_or_the_tag_latest_resolved_to():
    def lock(ref, locked_ref=None):
        loc = {"type": "git", "url": "u", "rev": "a" * 40, "hash": "h", "submodules": False}
        if locked_ref:
            loc["ref"] = locked_ref
        return {"comfyui": {"original": {"type": "git", "url": "u", "ref": ref}, "locked": loc}}
    assert str(fit.core_release(lock("v0.3.75"))) == "0.3.75"
    assert str(fit.core_release(lock("latest", "refs/tags/v0.3.75"))) == "0.3.75"
    assert fit.core_release(lock("main", "refs/heads/main")) is None
    assert fit.core_release(lock("1234567")) is None  # a short commit is no release


def test_registry_candidates_from_a_hostile_listing(monkeypatch):
    """Only canonical versions older than the locked one, once each, never a deprecated one (a non-boolean
    `deprecated` counts as deprecated), at most MAX_TRIES; versions whose range excludes the core are summed up."""
    from comfyver.sources import registry

    listed = ([registry.Published(v, False, None) for v in ("1.0", "1.0.0", "01.0", " 1.1 ", "1.1\n", "x", "3.0.0")]
              + [registry.Published("0.9.0", True, None), registry.Published("1.2.0", False, "not a specifier")]
              + [registry.Published(f"0.{i}.0", False, ">=9.0") for i in range(1, 9)]
              + [registry.Published("0.0.5", False, "<1.0"), registry.Published("0.0.4", False, None)])
    monkeypatch.setattr(registry, "published", lambda node_id, what: listed)
    skipped: list[str] = []
    got = fit.registry_candidates("p", "2.0.0", fit.Version("0.3.75"), "node p", skipped)
    assert [c.ref for c in got] == ["1.2.0", "1.0", "0.0.5", "0.0.4"], got
    assert len(skipped) == 4 and skipped[0].startswith("0.8.0: the registry says it supports ComfyUI >=9.0")
    assert skipped[-1] == "5 more versions the registry says do not support ComfyUI 0.3.75"
