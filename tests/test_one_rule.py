"""Rules written once (issue 29): each is read from one place, and these tests fail if a second, differing copy
comes back (the handler and comfyver judging the same inputs differently)."""

from __future__ import annotations

import json
import re

import pytest
from comfyver.base import lockfile
from comfyver.base.errors import UsageError
from comfyver.lock import nodemap
from comfyver.sources import gitsource, resolve

TRICKY_IDS = ["a", "sdxl", "sdxl-base", "sdxl_base", "0", "9lives", "a" * 64, "a" * 65, "", "-a", "_a", "A", "sdXL",
              "sdxl.base", "sdxl.", ".sdxl", "sd xl", "sdxl\n", "sdxl/x", "..", "default", "ü", "a-", "a_", 3]


def _lock_accepts(vid) -> bool:
    try:
        lockfile.check_version_id(vid)
        return True
    except (UsageError, TypeError):
        return False


def _handler_accepts(vid) -> bool:
    import asyncio

    from handler.errors import JobError
    from handler.worker import Worker

    w = Worker.__new__(Worker)  # only the id check runs before anything of the worker is read
    try:
        asyncio.run(w._check_version(vid, None))
    except JobError as exc:
        return "is not a version id" not in exc.message
    except AttributeError:  # past the id check: the worker's state is read
        return True
    return True


@pytest.mark.parametrize("vid", TRICKY_IDS)
def test_the_handler_accepts_exactly_the_version_ids_the_lock_accepts(vid):
    assert _handler_accepts(vid) == _lock_accepts(vid) == lockfile.is_version_id(vid), vid


def test_the_schema_version_id_pattern_is_the_lock_rule():
    schema = json.loads(lockfile.SCHEMA_FILE.read_text())
    pattern = re.compile(schema["$defs"]["versionId"]["pattern"])
    for vid in TRICKY_IDS:
        if isinstance(vid, str) and vid not in lockfile.RESERVED_IDS:
            assert bool(pattern.search(vid)) == lockfile.is_version_id(vid), vid


TRICKY_URLS = ["https://github.com/kijai/ComfyUI-KJNodes", "https://github.com/kijai/ComfyUI-KJNodes.git",
               "https://github.com/kijai/ComfyUI-KJNodes/", "https://github.com/o/_private_", "https://github.com/o/.dot",
               "https://github.com/o/x?ref=y", "https://github.com/o/x#frag", "https://g/o/a%20b+c", "https://g/o/ÜNI",
               "https://g/o/" + "x" * 150, "https://g/o/.git", "https://g/o/---", "file:///tmp/repos/My.Pack",
               "ssh://git@github.com/o/Pack.git", "https://g/o/rgthree-comfy"]


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_node_name_from_url_is_one_rule(url):
    """`--node URL` (resolve) and the lock's node map (nodemap) name a repository the same way, and the name is
    one a lock accepts."""
    name = gitsource.node_name_for_url(url)
    assert nodemap.pack_name_for_url(url) == (name or "node")
    if name:
        assert resolve.parse_node_spec(url)[0] == name
        assert lockfile.NODE_NAME_RE.match(name), name
    else:
        with pytest.raises(UsageError, match="pass --name"):
            resolve.parse_node_spec(url)


def test_the_state_folder_has_one_name(monkeypatch, tmp_path):
    """COMFYUI_STATE_DIR (the Nix launchers' and images' name) is the handler's too; COMFY_STATE_DIR, the name
    docs/handler.md gave before, is read only when it is unset. No other module reads either variable."""
    from pathlib import Path

    from comfyver.realize import comfystate

    from handler.settings import Settings

    for n in ("COMFYUI_STATE_DIR", "COMFY_STATE_DIR"):
        monkeypatch.delenv(n, raising=False)
    monkeypatch.setenv("COMFY_STATE_DIR", str(tmp_path / "old"))
    assert Settings().state_dir == tmp_path / "old"
    monkeypatch.setenv("COMFYUI_STATE_DIR", str(tmp_path / "new"))
    assert Settings().state_dir == tmp_path / "new"
    assert comfystate.STATE_DIR_ENV == "COMFYUI_STATE_DIR"
    root = Path(__file__).resolve().parents[1]
    assert comfystate.STATE_DIR_ENV in (root / "nix" / "image.nix").read_text()
    assert f"${{{comfystate.STATE_DIR_ENV}:-" in (root / "nix" / "comfyui.nix").read_text()
    readers = sorted(str(p.relative_to(root)) for d in ("handler", "scripts/comfyver") for p in (root / d).rglob("*.py")
                     if re.search(r"[\"']COMFY(UI)?_STATE_DIR[\"']", p.read_text()))  # read by name
    assert readers == ["scripts/comfyver/realize/comfystate.py"]


UI_SHAPES = [{"nodes": [], "links": []}, {"nodes": [{"id": 1, "type": "X"}]}, {"nodes": {}, "links": []},
             {"1": {"class_type": "X", "inputs": {}}}, {"nodes": "x"}, {"links": []}, {"prompt": {"1": {}}}, {}]


@pytest.mark.parametrize("data", UI_SHAPES)
def test_the_handler_and_the_lock_tell_ui_format_apart_alike(data):
    from comfyver.base import uiworkflow
    from comfyver.lock import analyze

    from handler import workflow

    assert workflow.is_ui_format(data) == uiworkflow.is_ui(data)
    try:
        kind = analyze.parse(data, "w").format
    except analyze.WorkflowError:
        kind = None
    assert (kind == "ui") == uiworkflow.is_ui(data)


def test_links_read_alike_in_both_forms():
    """The handler follows a link by its origin, the lock's subgraph reading by its target: one reader, both forms."""
    from comfyver.base import uiworkflow

    from handler import workflow

    as_list, as_obj = [7, 1, 0, 2, 3, "IMAGE"], {"id": 7, "origin_id": 1, "origin_slot": 0, "target_id": 2,
                                                 "target_slot": 3, "type": "IMAGE"}
    assert uiworkflow.read_link(as_list) == uiworkflow.read_link(as_obj) == (7, 1, 0, 2, 3, "IMAGE")
    assert uiworkflow.read_link([7, 1, 0, 2]) is None and uiworkflow.read_link("x") is None
    for links in ([as_list], [as_obj]):
        _, read = workflow.read_ui_graph({"nodes": [{"id": 1, "type": "A"}, {"id": 2, "type": "B"}], "links": links})
        assert read == {7: (1, 0, "IMAGE")}
