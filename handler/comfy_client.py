"""ComfyUI's HTTP + websocket API, with one websocket kept open across jobs.

A reader task routes every message carrying a `prompt_id` to that prompt's queue.
Prompt ids are chosen here, so a listener exists before ComfyUI can send anything.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp

WS_CLOSED = {"type": "_ws_closed"}


class ComfyUnreachable(Exception):
    pass


class PromptRejected(Exception):
    """ComfyUI answered /prompt with an error (its own validation)."""

    def __init__(self, status: int, body):
        super().__init__(f"ComfyUI refused the workflow (HTTP {status})")
        self.status, self.body = status, body


class ComfyClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: dict[str, asyncio.Queue[dict]] = {}
        self.object_info: dict | None = None
        self.ws_connects = 0

    # --- plumbing -------------------------------------------------------------------------
    async def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # a new event loop (e.g. a new asyncio.run) cannot reuse the old loop's connections
            self._session, self._ws, self._reader, self._loop = None, None, None, loop
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._ws = self._reader = None

    async def request(self, method: str, path: str, *, timeout: float = 30, **kw) -> tuple[int, object]:
        s = await self.session()
        try:
            async with s.request(method, self.url + path, timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
                body = await r.read()
                ctype = r.headers.get("Content-Type", "")
                if "json" in ctype:
                    try:
                        return r.status, json.loads(body)
                    except ValueError:
                        pass
                return r.status, body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ComfyUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    async def healthy(self) -> bool:
        try:
            status, _ = await self.request("GET", "/system_stats", timeout=5)
            return status == 200
        except ComfyUnreachable:
            return False

    async def get_object_info(self, refresh: bool = False) -> dict:
        if self.object_info is None or refresh:
            status, body = await self.request("GET", "/object_info", timeout=60)
            if status != 200 or not isinstance(body, dict):
                raise ComfyUnreachable(f"GET /object_info answered HTTP {status}")
            self.object_info = body
        return self.object_info

    def connected(self) -> bool:
        """True when the websocket is open on the running event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._ws is not None and not self._ws.closed and self._loop is loop

    # --- websocket ------------------------------------------------------------------------
    async def ensure_ws(self) -> None:
        session = await self.session()
        if self._ws is not None and not self._ws.closed:
            return
        try:
            ws = await session.ws_connect(f"{self.url}/ws?clientId={self.client_id}", heartbeat=None,
                                                max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ComfyUnreachable(f"websocket: {type(exc).__name__}: {exc}") from None
        self._ws = ws
        self.ws_connects += 1
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    continue
                data = m.get("data") if isinstance(m, dict) else None
                pid = data.get("prompt_id") if isinstance(data, dict) else None
                q = self._listeners.get(pid) if pid else None
                if q is not None:
                    q.put_nowait(m)
        except (aiohttp.ClientError, OSError, asyncio.CancelledError):
            pass
        finally:
            if self._ws is ws:
                self._ws = None
            for q in list(self._listeners.values()):
                q.put_nowait(WS_CLOSED)

    # --- prompts ----------------------------------------------------------------------------
    def listen(self, prompt_id: str) -> asyncio.Queue[dict]:
        q: asyncio.Queue[dict] = asyncio.Queue()
        self._listeners[prompt_id] = q
        return q

    def unlisten(self, prompt_id: str) -> None:
        self._listeners.pop(prompt_id, None)

    async def queue_prompt(self, prompt: dict, prompt_id: str, extra_data: dict | None = None) -> None:
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data  # e.g. api_key_comfy_org for ComfyUI's API nodes
        status, body = await self.request("POST", "/prompt", json=payload)
        if status != 200:
            raise PromptRejected(status, body)

    async def history(self, prompt_id: str) -> dict | None:
        status, body = await self.request("GET", f"/history/{prompt_id}")
        if status == 200 and isinstance(body, dict):
            return body.get(prompt_id)
        return None

    async def interrupt(self, prompt_id: str) -> bool:
        """Stop `prompt_id`: drop it from the queue if pending, interrupt it if running. False when ComfyUI
        did not answer (hung or gone)."""
        try:
            await self.request("POST", "/queue", json={"delete": [prompt_id]}, timeout=5)
            status, _ = await self.request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=5)
            return status == 200
        except ComfyUnreachable:
            return False

    async def view_into(self, fh, filename: str, subfolder: str, kind: str) -> None:
        """Stream an output file from /view into the binary file `fh` (never held in memory whole)."""
        s = await self.session()
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        try:
            async with s.get(self.url + "/view", params=params, timeout=aiohttp.ClientTimeout(total=300)) as r:
                if r.status != 200:
                    raise ComfyUnreachable(f"GET /view {filename!r}: HTTP {r.status}")
                async for chunk in r.content.iter_chunked(1 << 20):
                    fh.write(chunk)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ComfyUnreachable(f"GET /view {filename!r}: {type(exc).__name__}: {exc}") from None
