"""`comfyver ui` in a real browser: Debian's chromium (headless, DevTools protocol) loads the page of a locked
version (the real ComfyUI 0.3.75 with the bundled example's node and the handler's test nodes), queues the bundled
example workflow, and sees the output image in the page. The job runs in the real handler behind the runpod SDK's
local API, on another ComfyUI realized with the models; the page's own ComfyUI has no model file and runs nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from comfyver.base import lockfile
from comfyver.realize import realize
from comfyver.sources import gitsource
from tests.handler import env as henv
from tests.support.browser import Browser
from tests.support.comfyui import free_port
from tests.support.gitserver import git
from tests.test_realize_helpers import make_project, uv_lock

ROOT = Path(__file__).resolve().parents[1]
HELLO = json.loads((ROOT / "examples" / "hello.json").read_text())
STAMP = (ROOT / "examples" / "files" / "stamp.safetensors").read_bytes()
APP = "(window.app || (window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app))"


def _publish(gsrv, tmp: Path, name: str, src: Path) -> dict:
    work = tmp / "upstream" / name
    shutil.copytree(src, work)
    git("init", "--quiet", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", name, cwd=work)
    original = {"type": "git", "url": gsrv.publish(work, name), "ref": "main"}
    return {"original": original, "locked": gitsource.lock(original, name)}


@pytest.fixture(scope="module")
def site(tmp_path_factory, comfyui_tree):
    """The project (a version with the real core, the example node, the test nodes and the example's model), a
    remote: that version realized with its model and served by the handler behind the SDK's local API."""
    from tests.support.gitserver import GitServer
    from tests.support.httpserver import HTTPServer

    tmp = tmp_path_factory.mktemp("ui")
    mp = pytest.MonkeyPatch()
    mp.setenv("COMFYVER_CACHE", str(tmp / "cache"))
    mp.setenv("UV_CACHE_DIR", str(tmp / "uv-cache"))
    mp.setenv("COMFYVER_STATE_DIR", str(tmp / "remote-realize-state"))
    gsrv = GitServer(tmp / "git-served")
    (tmp / "http-files").mkdir()
    hsrv = HTTPServer(tmp / "http-files")
    hsrv.files_root = tmp / "http-files"
    core_work = tmp / "upstream" / "core"
    shutil.copytree(comfyui_tree, core_work)
    git("init", "--quiet", "-b", "main", cwd=core_work)
    git("add", "-A", cwd=core_work)
    git("commit", "--quiet", "-m", "ComfyUI 0.3.75", cwd=core_work)
    proj = make_project(tmp, gsrv, hsrv, core_files={}, models={"checkpoints/stamp.safetensors": STAMP})
    proj.lock["nodes"]["comfyver-example-node"] = _publish(gsrv, tmp, "comfyver-example-node",
                                                           ROOT / "examples" / "example-node")
    proj.lock["nodes"]["comfyver-test-nodes"] = _publish(gsrv, tmp, "comfyver-test-nodes",
                                                         henv.HERE / "custom_nodes" / "comfyver_test_nodes")
    vdir = proj.root / "versions" / proj.vid
    lockfile.write(vdir / "version.json", proj.lock)
    uv_lock(vdir, proj.vid)
    remote = realize.realize(proj.root, proj.vid, tmp / "remote", system_site_packages=True)
    digest = lockfile.lock_digest(lockfile.read(vdir / "version.json"))
    api = henv.LocalAPI({"COMFY_HOME": str(remote), "COMFY_PYTHON": str(remote / ".venv" / "bin" / "python"),
                         "COMFY_PORT": str(free_port()), "COMFY_URL": "", "COMFY_STATE_DIR": str(tmp / "remote-state"),
                         "OUTPUT_MODE": "base64", "COMFYVER_VERSION_ID": proj.vid, "COMFYVER_LOCK_DIGEST": digest,
                         "GCS_BUCKET": "", "BUCKET_ENDPOINT_URL": "", "RUNPOD_API_KEY": ""}, tmp / "api.log")
    site = {"tmp": tmp, "proj": proj, "api": api, "digest": digest, "pages": []}
    yield site
    for p in site["pages"]:
        p.stop()
    api.stop()
    gsrv.close()
    hsrv.close()
    mp.undo()


class UI:
    """`comfyver ui <id> ...` as a user starts it (a subprocess), until it prints the page's address."""

    def __init__(self, site, name: str, *target: str, extra_env: dict | None = None):
        tmp, proj = site["tmp"], site["proj"]
        self.state = tmp / f"ui-state-{name}"
        self.log = tmp / f"ui-{name}.log"
        environ = {**os.environ, "COMFYVER_ROOT": str(proj.root), "COMFYVER_STATE_DIR": str(self.state),
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]),
                   "RUNPOD_API_KEY": "rpa_UI_KEY_must_not_reach_the_page", **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "comfyver", "ui", proj.vid, *target, "--port",
                                      str(free_port()), "--into", str(tmp / "ui-tree"), "--system-site-packages",
                                      "--json"], env=environ, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
                                     text=True)
        line = self.proc.stdout.readline()
        assert line, f"comfyver ui exited ({self.proc.wait()}):\n{self.log.read_text()[-4000:]}"
        info = json.loads(line)
        self.url, self.comfy_log = info["url"], Path(info["log"])
        site["pages"].append(self)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser(site):
    b = Browser(site["tmp"])
    yield b
    b.close()


def open_page(b: Browser, url: str) -> None:
    b.goto(url)
    b.wait_for(f"!!({APP} && {APP}.graph && {APP}.api && document.querySelector('canvas'))", 180, "ComfyUI's page")


def queue(b: Browser, workflow: dict) -> None:
    b.run(f"await {APP}.loadApiJson({json.dumps(workflow)}, 'hello.json'); await {APP}.queuePrompt(0, 1);")


def jobs_started(site) -> int:
    return site["api"].log.read_text(errors="replace").count("| Started.")


def test_the_page_shows_the_locks_models_and_queue_runs_on_the_endpoint(site, browser, tmp_path):
    ui = UI(site, "main", "--local", site["api"].url)
    open_page(browser, ui.url)
    # every model combo lists the lock's models, though no model file is on this machine
    names = browser.eval("(await (await fetch('/object_info/StampFromModel')).json())"
                         ".StampFromModel.input.required.model_name[0]")
    assert names == ["stamp.safetensors"]
    assert not list((site["tmp"] / "ui-tree").glob("models/**/stamp.safetensors"))
    before = jobs_started(site)
    queue(browser, HELLO)
    try:
        src = browser.wait_for(f"(() => {{ const n = {APP}.graph.getNodeById(4); const im = n && n.imgs && n.imgs[0];"
                               f" return im && im.complete && im.naturalWidth > 0 && im.src; }})()", 120,
                               "the output image in the page")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- page's ComfyUI:\n{ui.comfy_log.read_text()[-3000:]}\n--- comfyver ui:\n"
                             f"{ui.log.read_text()[-2000:]}\n--- handler:\n{site['api'].log.read_text()[-3000:]}")
    assert "comfyver-remote" in src
    browser.screenshot(tmp_path / "page.png")
    # the image the page shows is the remote job's: the model's colour, inverted
    from PIL import Image
    png = requests.get(src, timeout=10).content
    want = tuple(255 - c for c in STAMP[:3])
    got = Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0))
    assert all(abs(a - b) <= 1 for a, b in zip(got, want)), (got, want)
    # it ran in the handler behind the SDK's local API; the page's ComfyUI executed nothing itself
    assert jobs_started(site) == before + 1
    outputs = ui.state / "output"
    assert not [p for p in outputs.glob("*.png")], "the page's ComfyUI saved an image itself"
    assert "nothing is executed locally" in ui.comfy_log.read_text()
    # the API key never reached ComfyUI: not in its log, not in what the page can fetch
    assert "rpa_UI_KEY" not in ui.comfy_log.read_text()
    assert "rpa_UI_KEY" not in browser.eval("JSON.stringify(await (await fetch('/system_stats')).json())")


def test_a_validation_error_shows_in_the_page_without_a_remote_call(site, browser):
    ui = next(p for p in site["pages"] if p.log.name == "ui-main.log")
    open_page(browser, ui.url)
    before = jobs_started(site)
    bad = json.loads(json.dumps(HELLO))
    bad["2"]["inputs"]["model_name"] = "not-in-the-lock.safetensors"
    queue(browser, bad)
    errors = browser.wait_for(f"{APP}.lastNodeErrors && Object.keys({APP}.lastNodeErrors).length && "
                              f"JSON.stringify({APP}.lastNodeErrors)", 60, "the validation error")
    assert "not-in-the-lock.safetensors" in errors
    time.sleep(2)
    assert jobs_started(site) == before
