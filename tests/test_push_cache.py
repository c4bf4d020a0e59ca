"""nix/push-cache.sh hands the signing key to `nix copy` without leaving it on disk, even after a SIGKILL
(issue 24 L14). A fake `nix` on PATH records what it got and waits to be killed with the script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
KEY = "cache.example-1:c2VjcmV0LXNpZ25pbmcta2V5LW5ldmVyLW9uLWRpc2s="

FAKE_NIX = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD/args"
url=""
for a in "$@"; do case "$a" in *secret-key=*) url="$a" ;; esac; done
keyfile="${url#*secret-key=}"; keyfile="${keyfile%%&*}"
cat -- "$keyfile" > "$RECORD/key" 2>&1
touch "$RECORD/ready"
sleep 60
"""


def files_holding(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_signing_key_reaches_nix_and_no_file_survives_a_sigkill(tmp_path):
    bin_dir, record, tmp = tmp_path / "bin", tmp_path / "record", tmp_path / "tmp"
    for d in (bin_dir, record, tmp):
        d.mkdir()
    (bin_dir / "nix").write_text(FAKE_NIX)
    (bin_dir / "nix").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp), "RECORD": str(record),
           "NIX_CACHE_URL": "file:///nowhere/cache", "NIX_SIGNING_KEY": KEY, "HOME": str(tmp_path)}
    proc = subprocess.Popen([str(ROOT / "nix" / "push-cache.sh"), "/nix/store/x-result"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (record / "ready").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the fake nix was never called"
            time.sleep(0.05)
        assert files_holding(tmp, KEY) == []  # already gone while nix runs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its nix, as a kill -9 of the job would
        proc.wait()
    assert (record / "key").read_text().strip() == KEY  # nix could read the key through the path it was given
    args = (record / "args").read_text().splitlines()
    assert KEY not in "\n".join(args)  # never on a command line
    query = parse_qs(urlsplit(next(a for a in args if "secret-key=" in a)).query)
    assert query["compression"] == ["zstd"]
    assert files_holding(tmp, KEY) == [] and files_holding(tmp_path / "bin", KEY) == []
