"""`comfyver switch <id> --at PATH` and `comfyver run --at PATH` (issue 26): two versions realized beside PATH, one
atomic link swap each way, a running ComfyUI restarted on the new version, foreign paths never touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from comfyver.base import lockfile
from comfyver.base.errors import ComfyverError
from comfyver.cli import main
from comfyver.realize import switch

from tests.test_realize_helpers import FAKE_CORE, make_project

ROOT = Path(__file__).resolve().parents[1]

# a ComfyUI stand-in that keeps running and says, in $SWITCH_TEST_LOG, which tree it runs from and when it stops
CORE = {**FAKE_CORE, "main.py": (
    "import os, signal, sys, time\n"
    "log = os.environ['SWITCH_TEST_LOG']\n"
    "def say(s):\n"
    "    with open(log, 'a') as f:\n"
    "        f.write(s + '\\n')\n"
    "say(f'start {os.path.realpath(os.getcwd())} {os.getpid()} {sys.argv[sys.argv.index(\"--user-directory\") + 1]}')\n"
    "def stop(*_):\n"
    "    say(f'stop {os.getpid()}')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGINT, stop)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "while True:\n"
    "    time.sleep(0.05)\n")}


@pytest.fixture(autouse=True)
def _uv_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


@pytest.fixture
def two(tmp_path, git_server, http_server, monkeypatch):
    """Versions v1 and v2 of one project (v2: v1 with another model), COMFYVER_ROOT pointing at it."""
    proj = make_project(tmp_path, git_server, http_server, core_files=CORE)
    v2 = proj.root / "versions" / "v2"
    shutil.copytree(proj.root / "versions" / "v1", v2)
    lock = json.loads((v2 / "version.json").read_text())
    lock["id"] = "v2"
    lockfile.write(v2 / "version.json", lock)
    monkeypatch.setenv("COMFYVER_ROOT", str(proj.root))
    monkeypatch.setenv("COMFYVER_MODELS", str(tmp_path / "models"))
    return proj


def cli_json(capsys, *argv) -> tuple[int, dict]:
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else {"err": err})


def wait_for(pred, what: str, out: Path, timeout: float = 30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; comfyver run printed:\n{out.read_text()[-3000:]}")


def test_switch_between_two_versions_and_back_while_comfyver_run_is_up(two, tmp_path, capsys):
    at = tmp_path / "workspace" / "ComfyUI"
    at.parent.mkdir()
    rc, res = cli_json(capsys, "switch", "v1", "--at", str(at))
    assert rc == 0 and res["version"] == "v1" and res["previous"] is None and res["restarted"] is None, res
    assert at.is_symlink() and os.readlink(at) == ".ComfyUI.comfyver/versions/v1"
    assert (at / "main.py").is_file() and json.loads((at / ".comfyver-realized.json").read_text())["id"] == "v1"

    log, out = tmp_path / "comfy.log", (tmp_path / "run.out").open("w")
    runner = subprocess.Popen([sys.executable, "-m", "comfyver", "run", "--at", str(at)], cwd=ROOT,
                              env={**os.environ, "SWITCH_TEST_LOG": str(log),
                                   "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        home = switch.home(at)
        lines = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
        first = wait_for(lambda: [x for x in lines() if x.startswith("start")], "ComfyUI on v1", Path(out.name))
        assert first[0].split()[1] == str(home / "versions" / "v1")
        assert first[0].split()[3] == str(home / "state" / "user")  # one state folder for every version at PATH
        wait_for(lambda: (home / "run.pid").is_file(), "run.pid", Path(out.name))
        assert int((home / "run.pid").read_text()) == runner.pid

        rc, res = cli_json(capsys, "switch", "v2", "--at", str(at))
        assert rc == 0 and (res["version"], res["previous"], res["restarted"]) == ("v2", "v1", runner.pid), res
        assert os.readlink(at) == ".ComfyUI.comfyver/versions/v2"
        starts = wait_for(lambda: [x for x in lines() if x.startswith("start")][1:], "ComfyUI restarted on v2", Path(out.name))
        assert starts[0].split()[1] == str(home / "versions" / "v2")
        assert f"stop {first[0].split()[2]}" in lines()  # the old ComfyUI was stopped first
        assert (home / "versions" / "v1" / "main.py").is_file()  # kept for switching back

        # back to v1: already realized there, so only the link moves
        t = time.monotonic()
        rc, res = cli_json(capsys, "switch", "v1", "--at", str(at))
        assert rc == 0 and (res["version"], res["previous"]) == ("v1", "v2") and time.monotonic() - t < 5
        starts = wait_for(lambda: [x for x in lines() if x.startswith("start")][2:], "ComfyUI restarted on v1", Path(out.name))
        assert starts[0].split()[1] == str(home / "versions" / "v1")
        assert [(h["from"], h["to"]) for h in switch.history(at)] == [(None, "v1"), ("v1", "v2"), ("v2", "v1")]
        assert runner.poll() is None  # the supervisor stays up across switches
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    assert not (switch.home(at) / "run.pid").exists()
    assert [x for x in log.read_text().splitlines() if x.startswith("stop")][-1].startswith("stop ")


def test_a_folder_or_link_switch_did_not_make_is_never_touched(two, tmp_path, capsys):
    mine = tmp_path / "ComfyUI"
    (mine / "custom_nodes").mkdir(parents=True)
    rc, res = cli_json(capsys, "switch", "v1", "--at", str(mine))
    assert rc != 0 and "did not make" in res["error"] and "move it aside" in res["hint"]
    assert sorted(p.name for p in mine.iterdir()) == ["custom_nodes"]
    assert not switch.home(mine).exists()  # nothing realized for a path it refuses

    link = tmp_path / "Linked"
    link.symlink_to("/")
    with pytest.raises(ComfyverError, match="which `comfyver switch` did not make"):
        switch.switch(two.root, "v1", link)
    assert os.readlink(link) == "/"


def test_a_failed_realize_leaves_the_current_version_in_place(two, tmp_path, capsys):
    at = tmp_path / "ComfyUI"
    assert main(["switch", "v1", "--at", str(at)]) == 0
    (two.root / "versions" / "v2" / "uv.lock").unlink()  # v2 cannot be realized
    capsys.readouterr()
    rc, res = cli_json(capsys, "switch", "v2", "--at", str(at))
    assert rc != 0 and "uv.lock" in json.dumps(res)
    assert os.readlink(at) == ".ComfyUI.comfyver/versions/v1" and (at / "main.py").is_file()
    assert not list(tmp_path.glob(".ComfyUI.link-*"))


def test_run_at_a_path_without_a_version_says_what_to_do(two, tmp_path, capsys):
    rc, res = cli_json(capsys, "run", "--at", str(tmp_path / "nothing"))
    assert rc != 0 and "no version there yet" in res["error"] and "comfyver switch" in res["hint"]
    rc, res = cli_json(capsys, "run", "v1", "--at", str(tmp_path / "nothing"))
    assert rc == 2 and "no ID" in res["error"]
