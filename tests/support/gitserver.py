"""Real smart-HTTP git on 127.0.0.1: `git http-backend` behind a small threaded server.

Serves every bare repository under `root` at http://127.0.0.1:<port>/<name>.git,
exactly as a forge would (protocol v2, uploadpack.allowReachableSHA1InWant on).
"""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _Handler(BaseHTTPRequestHandler):
    server_version = "test-git/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):  # quiet
        pass

    def _cgi(self):
        srv = self.server
        srv.requests.append((self.command, self.path))
        if srv.down:
            self.send_error(503)
            return
        parts = urlsplit(self.path)
        body = b""
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            body = self.rfile.read(n)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(srv.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = p.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            if not line:
                continue
            k, _, v = line.decode().partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi


class GitServer:
    def __init__(self, root: Path, port: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.root = self.root
        self.httpd.requests = []
        self.httpd.down = False
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def bare(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def publish(self, work: Path, name: str) -> str:
        """Push every branch and tag of the work repo `work` to <root>/<name>.git."""
        bare = self.bare(name)
        if not bare.exists():
            git("init", "--bare", "--quiet", "-b", "main", str(bare))
            git("config", "uploadpack.allowReachableSHA1InWant", "true", cwd=bare)
            git("config", "uploadpack.allowAnySHA1InWant", "false", cwd=bare)
            git("config", "http.receivepack", "false", cwd=bare)
        git("push", "--quiet", "--force", "--mirror", str(bare), cwd=work)
        return self.url(name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def git(*args: str, cwd=None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str | bytes], message: str = "init", tag: str | None = None) -> str:
    """Create (or add a commit to) a work repo at `path`; return the new commit."""
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "-b", "main", cwd=path)
    for name, content in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            f.write_bytes(content)
        else:
            f.write_text(content)
    git("add", "-A", cwd=path)
    git("commit", "--quiet", "--allow-empty", "-m", message, cwd=path)
    if tag:
        git("tag", "-f", tag, cwd=path)
    return git("rev-parse", "HEAD", cwd=path)
