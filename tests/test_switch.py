"""`comfyver switch <id> --at PATH` and `comfyver run --at PATH` (issue 26): two versions realized beside PATH, one
atomic link swap each way, a running ComfyUI restarted on the new version, foreign paths never touched."""

from __future__ import annotations

import json
import os
import re
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


def runner_argv(at: Path) -> list[str]:
    return [sys.executable, "-m", "comfyver", "run", "--at", str(at)]


def runner_env(log: Path) -> dict[str, str]:
    return {**os.environ, "SWITCH_TEST_LOG": str(log),
            "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def start_runner(at: Path, log: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """`comfyver run --at PATH` in its own session, its output in `out`."""
    with out.open("w") as fh:
        return subprocess.Popen(runner_argv(at), cwd=ROOT, env=runner_env(log), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True), out


def stop_runner(runner: subprocess.Popen) -> None:
    if runner.poll() is None:
        runner.send_signal(signal.SIGINT)
    try:
        runner.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()


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
    assert at.is_symlink() and re.fullmatch(r"\.ComfyUI\.comfyver/versions/v1@[0-9a-f]{12}", os.readlink(at))
    assert (at / "main.py").is_file() and json.loads((at / ".comfyver-realized.json").read_text())["id"] == "v1"

    log = tmp_path / "comfy.log"
    runner, out = start_runner(at, log, tmp_path / "run.out")
    try:
        home = switch.home(at)
        lines = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
        first = wait_for(lambda: [x for x in lines() if x.startswith("start")], "ComfyUI on v1", out)
        v1_tree = str(at.parent / os.readlink(at))
        assert first[0].split()[1] == v1_tree
        assert first[0].split()[3] == str(home / "state" / "user")  # one state folder for every version at PATH
        wait_for(lambda: (home / "run.pid").is_file(), "run.pid", out)
        assert int((home / "run.pid").read_text()) == runner.pid

        rc, res = cli_json(capsys, "switch", "v2", "--at", str(at))
        assert rc == 0 and (res["version"], res["previous"], res["restarted"]) == ("v2", "v1", runner.pid), res
        assert os.readlink(at).startswith(".ComfyUI.comfyver/versions/v2@")
        starts = wait_for(lambda: [x for x in lines() if x.startswith("start")][1:], "ComfyUI restarted on v2", out)
        assert starts[0].split()[1] == str(at.parent / os.readlink(at))
        assert f"stop {first[0].split()[2]}" in lines()  # the old ComfyUI was stopped first
        assert (Path(v1_tree) / "main.py").is_file()  # kept for switching back

        # back to v1: already realized there, so only the link moves
        t = time.monotonic()
        rc, res = cli_json(capsys, "switch", "v1", "--at", str(at))
        assert rc == 0 and (res["version"], res["previous"]) == ("v1", "v2") and time.monotonic() - t < 5
        starts = wait_for(lambda: [x for x in lines() if x.startswith("start")][2:], "ComfyUI restarted on v1", out)
        assert starts[0].split()[1] == v1_tree
        assert [(h["from"], h["to"]) for h in switch.history(at)] == [(None, "v1"), ("v1", "v2"), ("v2", "v1")]

        # the version already there: nothing moves, ComfyUI is not restarted
        rc, res = cli_json(capsys, "switch", "v1", "--at", str(at))
        assert rc == 0 and res["changed"] is False and res["restarted"] is None, res
        time.sleep(0.5)
        assert len([x for x in lines() if x.startswith("start")]) == 3 and len(switch.history(at)) == 3

        # a second runner for the same PATH is refused; the first keeps it
        second = subprocess.run(runner_argv(at), cwd=ROOT, env=runner_env(log), capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1 and "already runs ComfyUI there" in second.stderr, second.stderr
        assert int((home / "run.pid").read_text()) == runner.pid
        assert runner.poll() is None  # the supervisor stays up across switches
    finally:
        stop_runner(runner)
    assert not (switch.home(at) / "run.pid").exists()
    assert [x for x in log.read_text().splitlines() if x.startswith("stop")][-1].startswith("stop ")


def test_a_changed_lock_of_the_current_version_is_realized_beside_it_never_over_it(two, tmp_path, capsys):
    """Re-switching to the version PATH points at after its lock changed builds a new folder; the tree a running
    ComfyUI uses is not replaced under it (a reader of PATH sees the old tree or the new one)."""
    at = tmp_path / "ComfyUI"
    assert main(["switch", "v1", "--at", str(at)]) == 0
    old = at.parent / os.readlink(at)
    inode = (old / "main.py").stat().st_ino
    pyproject = two.root / "versions" / "v1" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "# changed\n")
    capsys.readouterr()
    rc, res = cli_json(capsys, "switch", "v1", "--at", str(at))
    assert rc == 0 and res["changed"] is True and res["previous"] == "v1", res
    new = at.parent / os.readlink(at)
    assert new != old and (old / "main.py").stat().st_ino == inode  # the old tree untouched, kept as the previous
    assert json.loads((new / ".comfyver-realized.json").read_text())["id"] == "v1"
    pyproject.write_text(pyproject.read_text() + "# again\n")
    assert main(["switch", "v1", "--at", str(at)]) == 0
    builds = sorted(p.name for p in (switch.home(at) / "versions").iterdir() if not p.name.startswith("."))
    assert len(builds) == 2 and old.name not in builds  # the current and the previous build only


def test_sigterm_stops_comfyui_and_a_stale_pid_file_names_nobody(two, tmp_path, capsys):
    at = tmp_path / "ComfyUI"
    assert main(["switch", "v1", "--at", str(at)]) == 0
    log = tmp_path / "comfy.log"
    runner, out = start_runner(at, log, tmp_path / "run.out")
    try:
        first = wait_for(lambda: [x for x in (log.read_text().splitlines() if log.exists() else [])
                                  if x.startswith("start")], "ComfyUI", out)
        comfy = int(first[0].split()[2])
        runner.send_signal(signal.SIGTERM)  # docker stop, a pod's shutdown
        runner.wait(timeout=30)
        assert runner.returncode is not None and wait_for(lambda: not _alive(comfy), "ComfyUI stopped", out, 20)
    finally:
        stop_runner(runner)
    # run.pid left on the volume by a dead pod, now naming an unrelated live process: switch never signals it
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--at", str(at), "comfyver"])
    try:
        (switch.home(at) / "run.pid").write_text(f"{bystander.pid}\n")
        capsys.readouterr()
        rc, res = cli_json(capsys, "switch", "v2", "--at", str(at))
        assert rc == 0 and res["restarted"] is None, res
        time.sleep(0.3)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


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
    assert os.readlink(at).startswith(".ComfyUI.comfyver/versions/v1@") and (at / "main.py").is_file()
    assert not list(tmp_path.glob(".ComfyUI.link-*"))


def test_run_at_a_path_without_a_version_says_what_to_do(two, tmp_path, capsys):
    rc, res = cli_json(capsys, "run", "--at", str(tmp_path / "nothing"))
    assert rc != 0 and "no version there yet" in res["error"] and "comfyver switch" in res["hint"]
    rc, res = cli_json(capsys, "run", "v1", "--at", str(tmp_path / "nothing"))
    assert rc == 2 and "no ID" in res["error"]
