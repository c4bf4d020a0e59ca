"""`comfyver ui` in a real browser: Debian's chromium (headless, DevTools protocol) loads the page of a locked
version (the real ComfyUI 0.3.75 with the bundled example's node and the handler's test nodes), queues the bundled
example workflow, and sees the output image in the page. The job runs in the real handler behind the runpod SDK's
local API, on another ComfyUI realized with the models; the page's own ComfyUI has no model file and runs nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
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
from tests.test_realize_helpers import commit_tree, make_project, uv_lock

ROOT = Path(__file__).resolve().parents[1]
HELLO = json.loads((ROOT / "examples" / "hello.json").read_text())
STAMP = (ROOT / "examples" / "files" / "stamp.safetensors").read_bytes()
# credentials whose names say nothing of it: the page's ComfyUI gets none of them (issue 24 L4)
CREDENTIALS_UNDER_OTHER_NAMES = {"PIP_INDEX_URL": "https://me:pw-in-pip-url@pypi.example/simple", "GH_PAT": "ghp_PAT1",
                                 "LC_SSH_TOKEN": "ghp_forwarded_by_sshd",
                                 "DATABASE_URL": "postgres://u:pw-in-db-url@db/x",
                                 "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=az-secret"}
APP = "(window.app || (window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app))"


def _publish(gsrv, tmp: Path, name: str, src: Path) -> dict:
    work = commit_tree(src, tmp / "upstream" / name, name)
    original = {"type": "git", "url": gsrv.publish(work, name), "ref": "main"}
    return {"original": original, "locked": gitsource.lock(original, name)}


def build_site(tmp: Path, comfyui_tree: Path) -> dict:
    """The project (a version with the real core, the example node, the test nodes and the example's model), a
    remote: that version realized with its model and served by the handler behind the SDK's local API.
    `site["close"]()` stops what it started."""
    from tests.support.gitserver import GitServer
    from tests.support.httpserver import HTTPServer

    mp = pytest.MonkeyPatch()
    mp.setenv("COMFYVER_CACHE", str(tmp / "cache"))
    mp.setenv("UV_CACHE_DIR", str(tmp / "uv-cache"))
    mp.setenv("COMFYVER_STATE_DIR", str(tmp / "remote-realize-state"))
    gsrv = GitServer(tmp / "git-served")
    (tmp / "http-files").mkdir()
    hsrv = HTTPServer(tmp / "http-files")
    hsrv.files_root = tmp / "http-files"
    commit_tree(comfyui_tree, tmp / "upstream" / "core", "ComfyUI 0.3.75")
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
                         "GCS_BUCKET": "", "BUCKET_ENDPOINT_URL": "", "RUNPOD_API_KEY": "",
                         "RUNPOD_DEBUG_LEVEL": "INFO"}, tmp / "api.log")
    site = {"tmp": tmp, "proj": proj, "api": api, "digest": digest, "pages": []}

    def close():
        for p in site["pages"]:
            p.stop()
        api.stop()
        gsrv.close()
        hsrv.close()
        mp.undo()
    site["close"] = close
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory, comfyui_tree):
    s = build_site(tmp_path_factory.mktemp("ui"), comfyui_tree)
    yield s
    s["close"]()


class UI:
    """`comfyver ui <id> ...` as a user starts it (a subprocess), until it prints the page's address."""

    def __init__(self, site, name: str, *target: str, extra_env: dict | None = None):
        tmp, proj = site["tmp"], site["proj"]
        self.state = tmp / f"ui-state-{name}"
        self.log = tmp / f"ui-{name}.log"
        environ = {**os.environ, "COMFYVER_ROOT": str(proj.root), "COMFYVER_STATE_DIR": str(self.state),
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]),
                   "RUNPOD_API_KEY": "rpa_UI_KEY_must_not_reach_the_page", **CREDENTIALS_UNDER_OTHER_NAMES,
                   **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "comfyver", "ui", proj.vid, *target, "--port",
                                      str(free_port()), "--into", str(tmp / "ui-tree"), "--system-site-packages",
                                      "--json"], env=environ, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
                                     text=True)
        line = self.proc.stdout.readline()
        assert line, f"comfyver ui exited ({self.proc.wait()}):\n{self.log.read_text()[-4000:]}"
        info = json.loads(line)
        # `address` is what the user opens (it carries this start's key); `url` the page's origin
        self.address, self.url, self.comfy_log = info["url"], info.get("origin", info["url"]), Path(info["log"])
        self.port = int(self.url.rsplit(":", 1)[1])
        self.cookies = {f"comfyver_ui_{self.port}": self.address.partition("comfyver_key=")[2]}
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
    """Load the page and wait until its start-up is over: the frontend loads its own workflow (the default, or
    the last one) asynchronously, and that load would replace a workflow loaded before it ends."""
    b.goto(url)
    b.wait_for(f"!!({APP} && {APP}.graph && {APP}.api && document.querySelector('canvas'))", 180, "ComfyUI's page")
    b.run(f"""let last = -1, same = 0;
              while (same < 6) {{ const n = {APP}.graph.nodes.length; same = n === last ? same + 1 : 0; last = n;
                                 await new Promise(r => setTimeout(r, 250)); }}""")


def queue(b: Browser, workflow: dict) -> str:
    """Queue as the page's Queue does (POST /prompt, validated by ComfyUI); returns the prompt id."""
    return b.eval(f"(await {APP}.api.queuePrompt(0, {{output: {json.dumps(workflow)}, workflow: {{}}}})).prompt_id")


def load_and_queue(b: Browser, workflow: dict) -> None:
    """Load an API-format workflow into the graph, as a user opening the file, then press Queue. (Loaded again if
    the page's own start-up load replaced it.)"""
    want = json.dumps(json.dumps(sorted(n["class_type"] for n in workflow.values()), separators=(",", ":")))
    ours = f"JSON.stringify({APP}.graph.nodes.map(n => n.type).sort()) === {want}"
    for _ in range(5):
        b.run(f"await {APP}.loadApiJson({json.dumps(workflow)}, 'hello.json');")
        b.wait_for(ours, 30, f"the workflow in the graph (it holds "
                   f"{b.eval(f'JSON.stringify({APP}.graph.nodes.map(n => n.type))')})")
        time.sleep(1.5)
        if b.eval(ours):
            break
    b.run(f"await {APP}.queuePrompt(0, 1);")


def jobs_started(site) -> int:
    return site["api"].log.read_text(errors="replace").count("| Started.")


def test_the_page_shows_the_locks_models_and_queue_runs_on_the_endpoint(site, browser, tmp_path):
    ui = UI(site, "main", "--local", site["api"].url)
    open_page(browser, ui.address)
    # every model combo lists the lock's models, though no model file is on this machine
    names = browser.eval("(await (await fetch('/object_info/StampFromModel')).json())"
                         ".StampFromModel.input.required.model_name[0]")
    assert names == ["stamp.safetensors"]
    assert not list((site["tmp"] / "ui-tree").glob("models/**/stamp.safetensors"))
    before = jobs_started(site)
    listen(browser)
    load_and_queue(browser, HELLO)
    try:
        src = browser.wait_for(f"(() => {{ const n = {APP}.graph.getNodeById(4); const im = n && n.imgs && n.imgs[0];"
                               f" return im && im.complete && im.naturalWidth > 0 && im.src; }})()", 120,
                               "the output image in the page")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- events: {browser.eval('JSON.stringify(window.__ev)')[:3000]}"
                             f"\n--- page's ComfyUI:\n{ui.comfy_log.read_text()[-3000:]}\n--- comfyver ui:\n"
                             f"{ui.log.read_text()[-2000:]}\n--- handler:\n{site['api'].log.read_text()[-3000:]}") from exc
    assert "comfyver-remote" in src
    # the README's picture of the page: COMFYVER_UI_SCREENSHOT=docs/ui-page.png python -m pytest tests/test_ui.py -k queue
    browser.run("""for (const d of document.querySelectorAll('[role=dialog]')) {  // the first-run templates dialog
                     const top = [...d.querySelectorAll('button')].filter(b => b.getBoundingClientRect().top < 130);
                     top.sort((a, b) => b.getBoundingClientRect().right - a.getBoundingClientRect().right);
                     if (top[0]) top[0].click(); }""")
    time.sleep(0.5)
    browser.run(f"{APP}.canvas.ds.scale = 0.8; {APP}.canvas.ds.offset = [30, 150]; {APP}.graph.setDirtyCanvas(true, true);")
    time.sleep(1)
    browser.screenshot(Path(os.environ.get("COMFYVER_UI_SCREENSHOT") or tmp_path / "page.png"))
    # the image the page shows is the remote job's: the model's colour, inverted
    from PIL import Image
    png = requests.get(src, cookies=ui.cookies, timeout=10).content
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
    open_page(browser, ui.address)
    before = jobs_started(site)
    bad = json.loads(json.dumps(HELLO))
    bad["2"]["inputs"]["model_name"] = "not-in-the-lock.safetensors"
    load_and_queue(browser, bad)
    # the page marks the node and opens its error dialog
    errors = browser.wait_for(f"{APP}.lastNodeErrors && Object.keys({APP}.lastNodeErrors).length && "
                              f"JSON.stringify({APP}.lastNodeErrors)", 60, "the validation error")
    assert "not-in-the-lock.safetensors" in errors
    browser.wait_for("document.body.innerText.includes('not-in-the-lock.safetensors')", 30, "the error dialog")
    time.sleep(2)
    assert jobs_started(site) == before


def invert(color: int) -> dict:
    return henv.invert_workflow(color, size=16, prefix="ui")


def listen(b: Browser) -> None:
    """Record the page's own ComfyUI events, as the page receives them."""
    b.run(f"""window.__ev = []; for (const t of ['executed', 'execution_error', 'execution_interrupted',
              'execution_start', 'progress', 'executing'])
              {APP}.api.addEventListener(t, e => window.__ev.push({{type: t, detail: e.detail}}));""")


def events(b: Browser, kind: str) -> list[dict]:
    return [e["detail"] for e in b.eval("window.__ev") if e["type"] == kind]


def remote_comfy_port(site) -> int:
    return int(site["api"].env["COMFY_PORT"])


def test_several_prompts_run_in_order_and_each_output_comes_back(site, browser):
    ui = next(p for p in site["pages"] if p.log.name == "ui-main.log")
    open_page(browser, ui.address)
    listen(browser)
    colors = [0x102030, 0x405060, 0x708090]
    ids = [queue(browser, invert(c)) for c in colors]
    browser.wait_for(f"window.__ev.filter(e => e.type === 'executed').length >= {len(colors)}", 180, "three outputs")
    done = events(browser, "executed")
    assert [d["prompt_id"] for d in done] == ids  # in the order queued
    from PIL import Image
    for d, c in zip(done, colors):
        [img] = d["output"]["images"]
        png = requests.get(f"{ui.url}/view", params={**img}, cookies=ui.cookies, timeout=10).content
        got = Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0))
        want = tuple(255 - ((c >> s) & 0xFF) for s in (16, 8, 0))
        assert all(abs(a - b) <= 1 for a, b in zip(got, want)), (got, want)


def test_an_unreachable_endpoint_is_an_error_in_the_page_and_the_page_stays_usable(site, browser):
    ui = UI(site, "down", "--local", "http://127.0.0.1:9")
    open_page(browser, ui.address)
    listen(browser)
    for n in (1, 2):  # a failed remote job leaves the queue working
        queue(browser, HELLO)
        browser.wait_for(f"window.__ev.filter(e => e.type === 'execution_error').length >= {n}", 60, "the error")
    [first, _] = events(browser, "execution_error")
    assert "local worker http://127.0.0.1:9" in first["exception_message"]
    assert "rpa_UI_KEY" not in json.dumps(first)


def test_a_lock_digest_mismatch_is_refused_by_the_worker_and_shown(site, browser):
    # a worker whose tree was realized from another lock: its marker says so (the worker trusts the marker)
    home = site["tmp"] / "other-lock-tree"
    home.mkdir(exist_ok=True)
    (home / realize.MARKER).write_text(json.dumps({"id": site["proj"].vid, "lock": "0" * 64}))
    other = henv.LocalAPI({"COMFY_URL": f"http://127.0.0.1:{remote_comfy_port(site)}",
                           "COMFY_HOME": str(home), "OUTPUT_MODE": "base64",
                           "COMFYVER_VERSION_ID": site["proj"].vid, "COMFYVER_LOCK_DIGEST": "0" * 64,
                           "GCS_BUCKET": "", "BUCKET_ENDPOINT_URL": ""}, site["tmp"] / "api-other.log")
    try:
        ui = UI(site, "mismatch", "--local", other.url)
        open_page(browser, ui.address)
        listen(browser)
        queue(browser, HELLO)
        browser.wait_for("window.__ev.some(e => e.type === 'execution_error')", 120, "the refusal")
        [err] = events(browser, "execution_error")
        assert "does not match the lock this worker runs" in err["exception_message"]
        assert site["digest"][:12] in err["exception_message"] or "lock_digest" in err["exception_message"]
    finally:
        other.stop()


def test_cancel_in_the_page_cancels_the_remote_job(site, browser, monkeypatch):
    """Through the runpod SDK's client API (a local queue) and the real handler in the SDK's worker loop: the
    page's Cancel reaches the endpoint's job, and the page stays usable."""
    from tests.support.jobqueue import JobQueue, handler_worker

    q = JobQueue()
    worker_env = {"COMFY_URL": f"http://127.0.0.1:{remote_comfy_port(site)}",
                  "COMFY_HOME": site["api"].env["COMFY_HOME"], "OUTPUT_MODE": "base64",
                  "COMFYVER_VERSION_ID": site["proj"].vid, "COMFYVER_LOCK_DIGEST": site["digest"],
                  "GCS_BUCKET": "", "BUCKET_ENDPOINT_URL": ""}
    try:
        with handler_worker(q, worker_env, site["tmp"] / "worker-loop.log", "ep-ui"):
            ui = UI(site, "cancel", "--endpoint", "ep-ui", extra_env={"RUNPOD_ENDPOINT_BASE_URL": q.url + "/v2"})
            open_page(browser, ui.address)
            listen(browser)
            queue(browser, henv.slow_workflow(seconds=60, steps=60))
            deadline = time.monotonic() + 120
            while not any(j["status"] == "IN_PROGRESS" and j.get("output") for j in q.jobs.values()):
                assert time.monotonic() < deadline, (site["tmp"] / "worker-loop.log").read_text()[-3000:]
                time.sleep(0.2)
            browser.wait_for("window.__ev.some(e => e.type === 'progress')", 30, "remote progress in the page")
            browser.run(f"await {APP}.api.interrupt();")
            browser.wait_for("window.__ev.some(e => e.type === 'execution_interrupted')", 60, "the interruption")
            [job] = q.jobs.values()
            assert job["status"] == "CANCELLED"
            queue(browser, invert(0x010203))  # the page and the endpoint go on
            browser.wait_for("window.__ev.some(e => e.type === 'executed')", 120, "the next job's output")
    finally:
        q.close()


def page_of(site, name: str = "main") -> UI:
    """The page `name` if a test started it, else a new one on the real handler."""
    return next((p for p in site["pages"] if p.log.name == f"ui-{name}.log"), None) or UI(
        site, name, "--local", site["api"].url)


def test_a_prompt_id_never_chooses_where_the_outputs_land(site):
    """Issue 24 H1: one POST /prompt with `prompt_id` an absolute path or `../..` made the real handler's output
    land there. Outputs land only under the state folder, in a folder the bridge names."""
    ui = page_of(site)
    target = site["tmp"] / "not-the-state" / "bashrc.d"
    ids = {str(target): 0x111111, "../../../not-the-state-2": 0x222222}
    for pid, color in ids.items():
        r = requests.post(f"{ui.url}/prompt", json={"prompt": invert(color), "prompt_id": pid},
                          cookies=ui.cookies, timeout=10)
        assert r.ok, r.text
    deadline = time.monotonic() + 180
    while True:
        history = requests.get(f"{ui.url}/history", cookies=ui.cookies, timeout=10).json()
        if all(history.get(pid, {}).get("status", {}).get("completed") for pid in ids):
            break
        assert time.monotonic() < deadline, (history, ui.comfy_log.read_text()[-3000:])
        time.sleep(0.5)
    saved = [img for pid in ids for out in history[pid]["outputs"].values() for img in out["images"]]
    assert len(saved) == len(ids)
    for img in saved:
        assert re.fullmatch(r"comfyver-remote/[0-9a-f]{32}", img["subfolder"]), img
        assert (ui.state / "output" / img["subfolder"] / img["filename"]).is_file()
    assert not (site["tmp"] / "not-the-state").exists() and not (site["tmp"] / "not-the-state-2").exists()


def test_the_page_answers_only_its_own_host_and_this_starts_key(site):
    """Issue 24 M1: any local process, or a DNS-rebinding page (Host and Origin its own name), queued paid jobs
    and read outputs back. Nothing reaches the page's routes without its own Host and this start's key."""
    ui = page_of(site)
    before = jobs_started(site)
    key = ui.cookies[f"comfyver_ui_{ui.port}"]
    body = {"prompt": invert(0x333333)}
    routes = [("GET", "/"), ("GET", "/system_stats"), ("GET", "/history"), ("GET", "/object_info"),
              ("GET", "/view?filename=x.png&type=output"), ("GET", "/ws"), ("POST", "/prompt")]
    for method, path in routes:  # a local process without the key
        r = requests.request(method, ui.url + path, json=body if method == "POST" else None, timeout=10)
        assert r.status_code == 403, (method, path, r.status_code)
    assert requests.get(f"{ui.url}/?comfyver_key=not-{key}", allow_redirects=False, timeout=10).status_code == 403
    assert requests.get(ui.url + "/system_stats", cookies={f"comfyver_ui_{ui.port}": "x" + key},
                        timeout=10).status_code == 403
    # a rebinding page: its own name in Host and Origin, even holding the key (cookie or address)
    for host in (f"rebind.example:{ui.port}", f"127.0.0.1:{ui.port + 1}", "127.0.0.1", f"LOCALHOST.:{ui.port}"):
        evil = {"Host": host, "Origin": f"http://{host}"}
        assert requests.post(ui.url + "/prompt", json=body, headers=evil, cookies=ui.cookies,
                             timeout=10).status_code == 403, host
        assert requests.get(ui.address, headers=evil, allow_redirects=False, timeout=10).status_code == 403, host
        assert requests.get(ui.url + "/history", headers=evil, cookies=ui.cookies, timeout=10).status_code == 403
    time.sleep(2)
    assert jobs_started(site) == before, "a refused request reached the endpoint"
    # the printed address, opened: the key becomes an HttpOnly, SameSite=Strict cookie and leaves the address bar
    s = requests.Session()
    r = s.get(ui.address, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/", (r.status_code, r.headers)
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    assert s.get(ui.url + "/system_stats", timeout=10).ok
    assert requests.get(ui.url + "/system_stats", headers={"Host": f"localhost:{ui.port}"}, cookies=ui.cookies,
                        timeout=10).ok  # localhost:<port> is the page too


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_the_pages_comfyui_holds_no_credential_whatever_its_name(site):
    """Issue 24 L4: PIP_INDEX_URL with a password, GH_PAT, DATABASE_URL, AZURE_STORAGE_CONNECTION_STRING reached
    the page's ComfyUI (only names with KEY/TOKEN/SECRET/PASSWORD/CREDENTIAL were dropped)."""
    ui = page_of(site)
    [comfy] = [c for c in _children(ui.proc.pid) if b"main.py" in Path(f"/proc/{c}/cmdline").read_bytes()]
    env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{comfy}/environ").read_bytes().split(b"\0") if b"=" in kv)
    assert b"COMFYVER_UI_BRIDGE" in env  # the page's ComfyUI, read right
    leaked = [k.decode() for k, v in env.items() if any(s.encode() in v for s in CREDENTIALS_UNDER_OTHER_NAMES.values())
              or b"rpa_UI_KEY" in v]
    assert not leaked
    assert env[b"HOME"] == str(ui.state / "home").encode()  # `~/.aws`, `~/.runpod` of the user are not its own
