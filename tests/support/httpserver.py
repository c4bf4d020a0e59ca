"""A recording HTTP server on 127.0.0.1 for files and JSON API answers.

Routes map a path (exact, query ignored unless given) to a callable
`(handler) -> (status, headers, body)` or to bytes / a JSON-able object.
Files under `files_root` are served with HTTP Range support. Every request
(method, path, headers) is recorded so tests can assert what was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _reply(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        srv.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        path = urlsplit(self.path).path
        route = srv.routes.get(self.path) or srv.routes.get(path)
        if route is not None:
            if callable(route):
                res = route(self, body)
                if res is None:  # the route wrote its own answer (e.g. a slow or cut stream)
                    return
                status, headers, out = res
            elif isinstance(route, (bytes, str)):
                status, headers, out = 200, {}, route if isinstance(route, bytes) else route.encode()
            else:
                status, headers, out = 200, {"Content-Type": "application/json"}, json.dumps(route).encode()
            if isinstance(out, (dict, list)):
                out = json.dumps(out).encode()
                headers = {"Content-Type": "application/json", **headers}
            return self._reply(status, out, headers)
        if srv.files_root is not None:
            f = (srv.files_root / unquote(path).lstrip("/")).resolve()
            if f.is_file() and srv.files_root.resolve() in f.parents:
                return self._serve_file(f)
        self._reply(404, b'{"error": "not found"}', {"Content-Type": "application/json"})

    def _serve_file(self, f: Path):
        data = f.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.server.ranges:
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            part = data[start:]
            return self._reply(206, part, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                           "Accept-Ranges": "bytes"})
        if self.server.cut_after is not None:
            # send headers for the full body, then drop the connection mid-way
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: self.server.cut_after])
            self.server.cut_after = None
            self.close_connection = True
            return
        self._reply(200, data, {"Accept-Ranges": "bytes"})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _handle


class HTTPServer:
    def __init__(self, files_root: Path | None = None, port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        self.httpd.files_root = Path(files_root) if files_root else None
        self.httpd.ranges = True
        self.httpd.cut_after = None
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def routes(self) -> dict:
        return self.httpd.routes

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
