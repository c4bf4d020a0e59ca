"""Start the page: realize the version without its models, start its ComfyUI on the CPU on 127.0.0.1 with the
`comfyver_remote` extension, and a bridge that runs the queued prompts on the endpoint.

ComfyUI gets an environment without credentials (only the variables `web.untrusted_env` allows, whatever
the others are named), so neither the page nor its log can show the API key; the bridge, in this process,
holds it. The page answers only at its own address and only to a browser holding this start's key (`address`,
printed once, carries it; the extension's gate turns it into a cookie).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import Lock
from comfyver.realize import localrun, realize
from comfyver.ui.bridge import Bridge

NODES = Path(__file__).resolve().parent / "nodes"


def default_into(vid: str) -> Path:
    """Its own realized folder (without models), so a realized folder with models is never replaced."""
    return project.cache_dir() / "ui" / lockfile.check_version_id(vid)


def models_by_folder(lock: Lock) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in lock["models"]:
        folder, name = key.split("/", 1)
        out.setdefault(folder, []).append(name)
    return {f: sorted(names) for f, names in out.items()}


def comfy_env(base: dict, bridge: Bridge, models_file: Path, target: str, port: int, key: str, home: Path) -> dict:
    """The page's ComfyUI's variables: the allow-list, a HOME of its own (packs that read ~/.aws, ~/.runpod or
    the HF token through `~` find nothing), and what the extension needs."""
    env = web.untrusted_env(base)
    env.update({"HOME": str(home), "COMFYVER_UI_BRIDGE": bridge.url, "COMFYVER_UI_TOKEN": bridge.token,
                "COMFYVER_UI_MODELS": str(models_file), "COMFYVER_UI_TARGET": target,
                "COMFYVER_UI_PORT": str(port), "COMFYVER_UI_PAGE_KEY": key})
    return env


GATE_PREFIX = "comfyver ui: "  # how the extension's gate starts a refusal


def check_port_free(port: int) -> None:
    """Another server on the port (an ordinary ComfyUI on 8188, say) would get the key and answer for the page."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"--port {port}: 127.0.0.1:{port} is in use ({exc.strerror})",
                             hint="stop what listens there or pass another --port") from None


class Page:
    """The running page: `url` (its origin), `address` (what the user opens: the origin with this start's key),
    `cookies` (what a client that opened it holds), the ComfyUI process, the bridge. `close()` stops both."""

    def __init__(self, root: Path, vid: str, backend, *, into: Path | None = None, port: int = 8188,
                 system_site_packages: bool = False, reporter: realize.Reporter = realize.QUIET,
                 start_timeout: float = 300):
        lock = lockfile.read(project.lock_path(root, vid))
        check_port_free(port)
        self.into = realize.realize(root, vid, into or default_into(vid), with_models=False, reporter=reporter,
                                    system_site_packages=system_site_packages)
        argv, env, cwd = localrun.command(vid, self.into, ["--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                                           "--disable-auto-launch"])
        state = Path(localrun.state_dir(vid))
        self.bridge = Bridge(backend, vid, lockfile.lock_digest(lock), state / "output")
        self._tmp = Path(tempfile.mkdtemp(prefix="comfyver-ui-"))
        models_file = self._tmp / "models.json"
        models_file.write_text(json.dumps(models_by_folder(lock)))
        paths = self._tmp / "comfyver-ui-paths.yaml"
        paths.write_text(f"comfyver_ui:\n  base_path: {json.dumps(str(NODES.parent))}\n  custom_nodes: nodes\n")
        self.log = state / "comfyver-ui.log"
        home = state / "home"
        home.mkdir(exist_ok=True)
        self.url = f"http://127.0.0.1:{port}"
        key = secrets.token_urlsafe(32)
        self.address = f"{self.url}/?comfyver_key={key}"
        self.cookies = {f"comfyver_ui_{port}": key}
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([*argv, "--extra-model-paths-config", str(paths)], cwd=cwd,
                                         env=comfy_env(env, self.bridge, models_file, backend.where, port, key, home),
                                         stdout=logf, stderr=subprocess.STDOUT)
        try:
            self._wait(start_timeout)
        except BaseException:
            self.close()
            raise

    def _wait(self, timeout: float) -> None:
        """Up = the page's gate refuses a request without the key and lets one with it through. The key is sent
        only to a server that showed the gate; a page answering without the key is an error, never served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise ComfyverError(f"ComfyUI exited with {self.proc.returncode} before its page was up:\n{tail}",
                                    hint=f"the whole log is {self.log}")
            try:
                bare = requests.get(self.url + "/system_stats", timeout=2)
                if bare.ok:
                    raise ComfyverError(f"the page at {self.url} answered without its key: its gate (the "
                                        "comfyver_remote extension) is not active, so it is not served",
                                        hint=f"see {self.log}")
                if bare.status_code == 403 and bare.text.startswith(GATE_PREFIX) and requests.get(
                        self.url + "/system_stats", cookies=self.cookies, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise ComfyverError(f"ComfyUI did not answer at {self.url} within {timeout:g} s", hint=f"see {self.log}")

    def wait(self) -> int:
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.bridge.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
