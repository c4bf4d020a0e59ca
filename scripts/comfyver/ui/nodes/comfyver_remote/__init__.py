"""Loaded by the ComfyUI that `comfyver ui` starts (never by a worker): nothing runs locally.

- Model combos list the lock's models (from $COMFYVER_UI_MODELS) although their files are not here.
- A queued prompt has passed ComfyUI's own validation (the /prompt route validates first); instead of
  executing it, this sends it to the comfyver process that started ComfyUI (the bridge at
  $COMFYVER_UI_BRIDGE, with the token $COMFYVER_UI_TOKEN). That process submits it to the endpoint,
  which holds the API key; this process never sees it. Progress, the executing node, errors and the
  outputs come back as ComfyUI's own websocket messages, so the page shows them as for a local run.
- Cancel (the page's interrupt) cancels the remote job.
- The page answers only its own address and only a browser that opened the address `comfyver ui` printed:
  a request whose Host is not 127.0.0.1:<port> or localhost:<port> (a DNS-rebinding page) is refused, and so
  is one without this start's key ($COMFYVER_UI_PAGE_KEY), which the printed address carries once
  (`?comfyver_key=`) and the page then keeps as an HttpOnly, SameSite=Strict cookie. Any other local
  process, or a web page the user visits, reaches nothing: no job is queued, no output read.

Only the standard library is used: this runs in the version's Python, which has no comfyver.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import comfy.model_management
import execution
import folder_paths
import server
from aiohttp import web

NODE_CLASS_MAPPINGS: dict = {}
BRIDGE = os.environ.get("COMFYVER_UI_BRIDGE", "")
TOKEN = os.environ.get("COMFYVER_UI_TOKEN", "")
PAGE_KEY = os.environ.get("COMFYVER_UI_PAGE_KEY", "")
PORT = os.environ.get("COMFYVER_UI_PORT", "")
KEY_PARAM = "comfyver_key"
log = logging.getLogger("comfyver-ui")


def _models() -> dict[str, list[str]]:
    try:
        with open(os.environ["COMFYVER_UI_MODELS"], encoding="utf-8") as fh:
            return json.load(fh)
    except (KeyError, OSError, ValueError):
        return {}


MODELS = _models()
_filename_list = folder_paths.get_filename_list


def get_filename_list(folder_name: str) -> list[str]:
    """The files ComfyUI finds, plus the lock's models of that folder (legacy folder names mapped)."""
    locked = MODELS.get(folder_paths.map_legacy(folder_name), []) + MODELS.get(folder_name, [])
    try:
        have = list(_filename_list(folder_name))
    except KeyError:  # a folder ComfyUI has no path for: only the lock's names, if it has some
        if not locked:
            raise
        have = []
    return sorted(set(have) | set(locked))


def _call(method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(BRIDGE + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def remote_execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):  # noqa: B006 (ComfyUI's signature)
    """PromptExecutor.execute, run on the endpoint."""
    import nodes
    nodes.interrupt_processing(False)
    self.server.client_id = extra_data.get("client_id")
    self.status_messages = []
    self.success = False
    self.history_result = {"outputs": {}, "meta": {}}
    self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
    self.add_message("execution_cached", {"nodes": [], "prompt_id": prompt_id}, broadcast=False)
    first = next(iter(prompt), None)

    def fail(message: str, node_id=None, kind: str = "RemoteJobFailed"):
        node_id = node_id if node_id in prompt else first
        self.add_message("execution_error", {
            "prompt_id": prompt_id, "node_id": node_id, "node_type": prompt.get(node_id, {}).get("class_type", ""),
            "executed": [], "exception_message": message, "exception_type": kind, "traceback": [],
            "current_inputs": {}, "current_outputs": []}, broadcast=False)

    try:
        job = _call("POST", "/jobs", {"prompt": prompt, "prompt_id": prompt_id})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return fail(f"comfyver ui: cannot hand the prompt to the comfyver process ({exc})")
    seen, node = 0, None
    while True:
        if comfy.model_management.processing_interrupted():
            try:
                _call("POST", f"/jobs/{job['id']}/cancel")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("comfyver ui: could not ask for the remote job to be cancelled (%s)", exc)
            self.add_message("execution_interrupted", {"prompt_id": prompt_id, "node_id": node or first,
                                                       "node_type": prompt.get(node or first, {}).get("class_type", ""),
                                                       "executed": []}, broadcast=True)
            return
        try:
            state = _call("GET", f"/jobs/{job['id']}?since={seen}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return fail(f"comfyver ui: lost the comfyver process ({exc})")
        for event in state["events"]:
            seen += 1
            if event.get("node") and event["node"] != node and event["node"] in prompt:
                node = event["node"]
                self.server.send_sync("executing", {"node": node, "display_node": node, "prompt_id": prompt_id},
                                      self.server.client_id)
            if event.get("max"):
                self.server.send_sync("progress", {"value": event["value"], "max": event["max"],
                                                   "prompt_id": prompt_id, "node": node}, self.server.client_id)
        if state["status"] == "COMPLETED":
            break
        if state["status"] in ("FAILED", "CANCELLED", "TIMED_OUT"):
            return fail(state.get("error") or state["status"], state.get("node_id"))
        time.sleep(0.05)  # the bridge is on this machine
    outputs: dict[str, dict] = {}
    for f in state["outputs"]:
        kind = "images" if f["kind"] in ("image", "video") else f["kind"] + "s"
        outputs.setdefault(f["node_id"], {}).setdefault(kind, []).append(
            {"filename": f["filename"], "subfolder": f["subfolder"], "type": "output"})
    for node_id, ui in outputs.items():
        self.server.send_sync("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                           "prompt_id": prompt_id}, self.server.client_id)
    self.history_result = {"outputs": outputs,
                           "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n,
                                        "comfyver_remote_job": job["id"]} for n in outputs}}
    self.success = True
    self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)


def _same(given: str, key: str) -> bool:
    return bool(key) and hmac.compare_digest(given.encode("utf-8", "replace"), key.encode())


def page_gate(key: str, port: str):
    """aiohttp middleware: this page's own Host and this start's key, before any route (the websocket, /prompt,
    /view, /history, static files) sees the request."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    cookie = f"comfyver_ui_{port}"  # cookies ignore the port: one name per page

    @web.middleware
    async def gate(request, handler):
        if request.headers.get("Host", "").lower() not in hosts:
            return web.Response(status=403, text=f"comfyver ui: this page answers only at http://127.0.0.1:{port}\n")
        if _same(request.cookies.get(cookie, ""), key):
            return await handler(request)
        if _same(request.query.get(KEY_PARAM, ""), key):  # the printed address, opened: keep the key as a cookie
            rest = urllib.parse.urlencode([(k, v) for k, v in request.query.items() if k != KEY_PARAM])
            path = "/" + request.rel_url.raw_path.lstrip("/\\")  # never `//host` or `/\\host`: this page only
            resp = web.Response(status=303, headers={"Location": path + ("?" + rest if rest else "")})
            resp.set_cookie(cookie, key, httponly=True, samesite="Strict", path="/")
            return resp
        return web.Response(status=403, text="comfyver ui: open the address `comfyver ui` printed "
                                              "(it carries this start's key)\n")
    return gate


if BRIDGE:
    # first, so that no other middleware or route answers a request the gate refuses
    server.PromptServer.instance.app.middlewares.insert(0, page_gate(PAGE_KEY, PORT))
    folder_paths.get_filename_list = get_filename_list
    execution.PromptExecutor.execute = remote_execute
    log.warning("comfyver ui: queued prompts run on %s, not on this machine; nothing is executed locally",
                os.environ.get("COMFYVER_UI_TARGET", "the endpoint"))
