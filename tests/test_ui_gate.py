"""The page's gate (the `comfyver_remote` extension's aiohttp middleware) and the page's start, without a ComfyUI:
the gate in a small aiohttp app on 127.0.0.1, ComfyUI's modules stubbed. The whole page with the real handler is
tests/test_ui.py; these are the outside review's findings on issue 24's M1 fix."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from aiohttp import web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.ui import serve

from tests.support.comfyui import free_port

EXTENSION = Path(serve.NODES) / "comfyver_remote" / "__init__.py"
KEY = "k" * 43


def load_extension(monkeypatch):
    """The extension as ComfyUI loads it, with no bridge configured (it patches nothing then)."""
    for name in ("comfy", "comfy.model_management", "execution", "folder_paths", "server"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["folder_paths"].get_filename_list = lambda folder: []
    monkeypatch.delenv("COMFYVER_UI_BRIDGE", raising=False)
    spec = importlib.util.spec_from_file_location("comfyver_remote_under_test", EXTENSION)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def gated(monkeypatch):
    """A page behind the gate on 127.0.0.1:<port>: every route answers 200 "route"."""
    ext = load_extension(monkeypatch)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def route(request):
        return web.Response(text="route")

    async def serve_it():
        app = web.Application(middlewares=[ext.page_gate(KEY, str(port))])
        app.router.add_route("*", "/{tail:.*}", route)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()
        return runner

    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = asyncio.run_coroutine_threadsafe(serve_it(), loop).result(10)
    assert started.wait(10)
    yield f"http://127.0.0.1:{port}", port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def test_the_printed_address_never_redirects_off_the_page(gated):
    """`//evil.example/?comfyver_key=K` answered `Location: //evil.example/`, which a browser follows off-site."""
    url, _port = gated
    for path in ("//evil.example/", "/\\evil.example/", "///evil.example/x", "/%2F%2Fevil.example/"):
        r = requests.get(f"{url}{path}?comfyver_key={KEY}&a=1", allow_redirects=False, timeout=10)
        assert r.status_code == 303, (path, r.status_code)
        location = r.headers["Location"]
        assert location.startswith("/") and location[1:2] not in ("/", "\\"), (path, location)
        assert "comfyver_key" not in location and location.endswith("?a=1"), location


def test_the_gate_refuses_odd_keys_and_hosts_cleanly(gated):
    url, port = gated
    cookie = f"comfyver_ui_{port}"
    assert requests.get(url + "/x", cookies={cookie: KEY}, timeout=10).text == "route"
    for bad in ("é" * 43, "", KEY + "x", KEY.upper()):
        r = requests.get(url + "/x", headers={"Cookie": f"{cookie}={bad}".encode()}, timeout=10)
        assert r.status_code == 403 and r.text.startswith(serve.GATE_PREFIX), (bad, r.status_code)
    for host in ("evil.example", f"127.0.0.1:{port + 1}", f"[::1]:{port}", f"127.0.0.1.:{port}"):
        r = requests.get(url + "/x", headers={"Host": host}, cookies={cookie: KEY}, timeout=10)
        assert r.status_code == 403, host


class Foreign(BaseHTTPRequestHandler):
    """Another server on the page's port (an ordinary ComfyUI, say): answers everything, records cookies."""
    cookies: ClassVar[list[str]] = []

    def do_GET(self):
        Foreign.cookies.append(self.headers.get("Cookie", ""))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


def test_the_page_is_up_only_when_its_gate_answers_and_the_key_goes_nowhere_else(tmp_path):
    """`_wait` took any 200 on the port as the page: with a plain ComfyUI on 8188 the printed address (with the
    key) opened that ungated ComfyUI, and the key went to it."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        with pytest.raises(UsageError, match=f"--port {port}: 127.0.0.1:{port} is in use"):
            serve.check_port_free(port)
        page = serve.Page.__new__(serve.Page)
        page.url, page.cookies, page.log = f"http://127.0.0.1:{port}", {f"comfyver_ui_{port}": KEY}, tmp_path / "log"
        page.proc = types.SimpleNamespace(poll=lambda: None, returncode=None)
        with pytest.raises(ComfyverError, match="answered without its key"):
            page._wait(10)
        assert Foreign.cookies and not any(KEY in c for c in Foreign.cookies)
    finally:
        srv.shutdown()
        srv.server_close()
