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
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from filelock import FileLock

from comfyver.base import project

_local = threading.local()
_init = threading.Lock()
Value = TypeVar("Value", bound=Mapping[str, Any])  # a locked entry (a TypedDict of lockfile) or a part of one


def _db() -> sqlite3.Connection:
    path = project.cache_dir() / "resolve.sqlite"
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "path", None) != path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # switching to WAL and creating the table race between threads and processes: do it under locks
        with _init, FileLock(str(path) + ".lock"):
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS resolved (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        _local.conn, _local.path = conn, path
    return conn


def _key(parts: tuple[object, ...]) -> str:
    return json.dumps(parts, separators=(",", ":"))


def get(*parts: object) -> dict[str, Any] | None:
    """The cached result, or None (a cache that cannot be read is a miss, never an error). The caller knows
    which shape it `put` under these parts."""
    try:
        row = _db().execute("SELECT value FROM resolved WHERE key = ?", (_key(parts),)).fetchone()
    except sqlite3.Error:
        return None
    return cast("dict[str, Any]", json.loads(row[0])) if row else None


def put(value: Value, *parts: object) -> Value:
    try:
        _db().execute("INSERT OR REPLACE INTO resolved (key, value) VALUES (?, ?)", (_key(parts), json.dumps(value)))
    except sqlite3.Error:
        pass  # the result stands; only the next run is slower
    return value
