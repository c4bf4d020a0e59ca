"""The resolution cache under concurrent first use (threads and processes on a fresh cache)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from comfyver.sources import resolvecache


def test_threads_on_a_fresh_cache():
    def work(i):
        resolvecache.put({"hash": f"h{i}"}, "git", f"url{i}", "rev", False)
        return resolvecache.get("git", f"url{i}", "rev", False)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(work, range(64)))
    assert got == [{"hash": f"h{i}"} for i in range(64)]


def test_processes_on_a_fresh_cache(tmp_path):
    code = ("import sys; from comfyver.sources import resolvecache as c; i = sys.argv[1]\n"
            "for k in range(50): c.put({'v': k}, 'p', i, k)\n"
            "assert all(c.get('p', i, k) == {'v': k} for k in range(50))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)]) for i in range(6)]
    assert [p.wait() for p in procs] == [0] * 6
    assert resolvecache.get("p", "3", 49) == {"v": 49}


def test_unreadable_cache_is_a_miss_not_an_error(tmp_path, monkeypatch):
    from comfyver.base import project

    (project.cache_dir()).mkdir(parents=True, exist_ok=True)
    (project.cache_dir() / "resolve.sqlite").write_bytes(b"this is not a database" * 100)
    assert resolvecache.get("git", "u", "r", False) is None
    assert resolvecache.put({"hash": "x"}, "git", "u", "r", False) == {"hash": "x"}
