"""Lock every example workflow of the real node-pack corpus, the way a user would, offline.

GitHub is played by the test git server (the corpus bundles and ComfyUI 0.3.75 as
`comfyanonymous/ComfyUI`, reached through git's `url.<server>.insteadOf https://github.com/`); the Comfy
Registry and Hugging Face are unreachable (a closed port). Each workflow gets ONE `comfyver lock ID --workflow W`;
when the only problems left are models whose source cannot be reached or is unknown offline, it is run again with
`--model K=URL --sha256 H --size N` for each (what a user who knows the file would give), then `check` and a
second `lock` (warm) must agree. Used by tests/test_corpus_lock.py and bench/corpus_lock.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import comfyui, nodepacks
from tests.support.gitserver import GitServer, git

UNREACHABLE = "http://127.0.0.1:9"


def setup(tmp: Path) -> tuple[GitServer, Path, dict]:
    srv = GitServer(tmp / "served")
    env_git = nodepacks.serve(srv)
    work = tmp / "work" / "ComfyUI"
    shutil.copytree(comfyui.source(), work, ignore=shutil.ignore_patterns("__pycache__", "extra_model_paths.yaml"))
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "ComfyUI 0.3.75"), ("tag", "v0.3.75")):
        git(*args, cwd=work)
    srv.publish(work, "comfyanonymous/ComfyUI")
    (tmp / "served" / "comfyanonymous" / "ComfyUI").symlink_to("ComfyUI.git")
    proj = tmp / "proj"
    (proj / "versions").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='p'\n")
    env = {**os.environ, **env_git, "COMFYVER_CACHE": str(tmp / "cache"), "COMFY_REGISTRY_URL": UNREACHABLE,
           "HF_ENDPOINT": UNREACHABLE, "CIVITAI_ENDPOINT": UNREACHABLE}
    env.pop("COMFYVER_MANAGER_DATA", None)  # the real ComfyUI-Manager data beside the checkout
    return srv, proj, env


@dataclass
class Outcome:
    workflow: str
    ok: bool
    pins: int = 0                      # models pinned by hand (--model --sha256 --size)
    cold_s: float = 0.0
    warm_s: float = 0.0
    check_rc: int | None = None
    relock_rc: int | None = None
    relock_added: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    knowledge: str = ""


def _cli(proj: Path, env: dict, *args: str) -> tuple[int, str, float]:
    """`comfyver ARGS` in this process (as a user's shell would run it: in `proj`, with `env`), timed."""
    from comfyver import cli
    from comfyver.lock import nodemap

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(proj)
        nodemap.manager.cache_clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(args))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        nodemap.manager.cache_clear()
    return rc, out.getvalue() + ("" if rc in (0, 1) else err.getvalue()), time.perf_counter() - t


def _pin_args(problems: list[dict]) -> list[str] | None:
    out = []
    for pm in problems:
        item = pm["item"]
        if not item.startswith(("model ", "models.")):
            return None
        key = item.split(" ", 1)[1] if item.startswith("model ") else item[len("models."):]
        if "/" not in key or key.startswith("?/"):
            key = "checkpoints/" + key.removeprefix("?/")
        out += ["--model", f"{key}=https://example.org/{key.rsplit('/', 1)[-1]}", "--sha256", "ab" * 32, "--size", "1"]
    return out


def workflows() -> list[tuple[str, Path]]:
    out = []
    for p in nodepacks.packs():
        tree = nodepacks.checkout(p)
        for w in p["example_workflows"]:
            path = w["path"] if isinstance(w, dict) else w
            vid = "".join(c if c.isalnum() else "-" for c in f"{p['name'][:20]}-{Path(path).stem[:24]}".lower())
            out.append((vid.strip("-"), tree / path))
    return out


def lock_one(proj: Path, env: dict, vid: str, wf: Path, probe_python: str | None = None) -> Outcome:
    """One user's lock of `wf` (with `--probe probe_python` when given), then check and a warm re-lock."""
    base = ["lock", vid, "--workflow", str(wf), "--comfyui-ref", "v0.3.75", "--no-python", "--json"]
    if probe_python:
        base += ["--probe", probe_python]
    rc, out, cold = _cli(proj, env, *base)
    res = json.loads(out)
    pins: list[str] = []
    if rc == 1 and (more := _pin_args(res["problems"])) is not None:
        pins = more
        rc, out, cold2 = _cli(proj, env, *base, *pins)
        cold += cold2
        res = json.loads(out)
        if rc == 1 and (more := _pin_args(res["problems"])) is not None:  # a model seen only after the first pins
            pins += more
            rc, out, cold3 = _cli(proj, env, *base, *pins)
            cold += cold3
            res = json.loads(out)
    o = Outcome(wf.name, rc == 0, len(pins) // 6, round(cold, 2))
    if rc != 0:
        o.problems = res.get("problems", [])
        return o
    o.nodes = res["nodes"]
    o.knowledge = res["knowledge"]
    o.check_rc, _, _ = _cli(proj, env, "check", vid, "--no-python")
    again = [a for a in base if a not in ("--comfyui-ref", "v0.3.75")]  # the same command, the version now exists
    o.relock_rc, out, o.warm_s = _cli(proj, env, *again)
    o.warm_s = round(o.warm_s, 2)
    if o.relock_rc == 0:
        o.relock_added = json.loads(out)["added_models"] + json.loads(out)["added_nodes"]
    return o
