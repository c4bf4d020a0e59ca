"""A local cache of resolutions: (input identity) -> locked result.

Keys name something immutable or validated: a git (url, rev, submodules), a
registry (id, version, downloadUrl), a Hugging Face (repo, commit, path), a
Civitai version id, an http URL with its ETag/Last-Modified/length, a local
file with its size/mtime/inode. So a re-lock of unchanged inputs skips every
clone, download and hash. SQLite gives safe concurrent access across processes.
"""

from __future__ import annotations

import json
import sqlite3
import threading

from comfyver import project

_local = threading.local()


def _db() -> sqlite3.Connection:
    path = project.cache_dir() / "resolve.sqlite"
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "path", None) != path:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS resolved (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        _local.conn, _local.path = conn, path
    return conn


def _key(parts: tuple) -> str:
    return json.dumps(parts, separators=(",", ":"))


def get(*parts) -> dict | None:
    row = _db().execute("SELECT value FROM resolved WHERE key = ?", (_key(parts),)).fetchone()
    return json.loads(row[0]) if row else None


def put(value: dict, *parts) -> dict:
    _db().execute("INSERT OR REPLACE INTO resolved (key, value) VALUES (?, ?)", (_key(parts), json.dumps(value)))
    return value
