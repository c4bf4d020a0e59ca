"""Lock every example workflow of the real node-pack corpus, the way a user would, offline.

GitHub is played by the test git server (the corpus' packs with their history and the real ComfyUI history as
`comfyanonymous/ComfyUI`, reached through git's `url.<server>.insteadOf https://github.com/`); the Comfy
Registry and Hugging Face are unreachable (a closed port). Each workflow gets ONE `comfyver lock ID --workflow W`;
when the only problems left are models whose source cannot be reached or is unknown offline, it is run again with
`--model K=URL --sha256 H --size N` for each (what a user who knows the file would give), then `check` and a
second `lock` (warm) must agree. Used by tests/test_corpus_lock.py and bench/corpus_lock.py.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import nodepacks
from tests.support.gitserver import GitServer

UNREACHABLE = "http://127.0.0.1:9"


def setup(tmp: Path) -> tuple[GitServer, Path, dict]:
    srv = GitServer(tmp / "served")
    env_git = nodepacks.serve(srv)  # the packs and the real ComfyUI history
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
    notes: list = field(default_factory=list)
    commands: int = 1                  # lock commands until it locked (or gave up): 1, or 2-4 with --pip / hand pins
    declared: list[str] = field(default_factory=list)  # --pip the notes named (a pack imports what it does not list)
    proof_s: float = 0.0               # the proof's own seconds over those commands (lock --json: proof_seconds)
    proof_warm_s: float = 0.0          # and in the warm re-lock


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


def _pip_args(notes: list[str]) -> list[str]:
    """The `--pip` declarations a failed lock's notes give for packs that import what their requirements lack."""
    found = [m for n in notes if "which the version's environment does not have" in n
             for m in re.findall(r"--pip ([A-Za-z0-9_.-]+)", n)]
    return [a for m in dict.fromkeys(found) for a in ("--pip", m)]


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
    out: list[tuple[str, Path]] = []
    for p in nodepacks.packs():
        tree = nodepacks.checkout(p)
        for w in p["example_workflows"]:
            path = w["path"] if isinstance(w, dict) else w
            vid = "".join(c if c.isalnum() else "-" for c in f"{p['name'][:20]}-{Path(path).stem}".lower())[:56]
            vid = vid.strip("-")
            if any(v == vid for v, _ in out):  # long names that share their first 56 characters
                vid = f"{vid}-{len(out)}"
            out.append((vid, tree / path))
    return out


def lock_one(proj: Path, env: dict, vid: str, wf: Path, probe_python: str | None = None, *,
             own_env: bool = False) -> Outcome:
    """One user's lock of `wf` (with `--probe probe_python` when given; with `own_env` the user's plain command:
    the Python lock on, proven in the version's own environment), then check and a warm re-lock."""
    base = ["lock", vid, "--workflow", str(wf), "--comfyui-ref", "v0.3.75", "--json"]
    if not own_env:
        base.append("--no-python")
    if probe_python and not own_env:
        base += ["--probe", probe_python]
    rc, out, cold = _cli(proj, env, *base)
    res = json.loads(out)
    runs = [res]
    pins: list[str] = []
    declare = _pip_args(res.get("notes") or []) if rc == 1 else []
    if declare:  # a pack imports what its requirements lack
        base += declare
        rc, out, more_s = _cli(proj, env, *base)
        cold += more_s
        res = json.loads(out)
        runs.append(res)
    if rc == 1 and (more := _pin_args(res["problems"])) is not None:
        pins = more
        rc, out, cold2 = _cli(proj, env, *base, *pins)
        cold += cold2
        res = json.loads(out)
        runs.append(res)
        if rc == 1 and (more := _pin_args(res["problems"])) is not None:  # a model seen only after the first pins
            pins += more
            rc, out, cold3 = _cli(proj, env, *base, *pins)
            cold += cold3
            res = json.loads(out)
            runs.append(res)
    o = Outcome(wf.name, rc == 0, len(pins) // 6, round(cold, 2), commands=len(runs), declared=declare[1::2],
                proof_s=round(sum(r.get("proof_seconds") or 0.0 for r in runs), 2))
    o.notes = res.get("notes") or []
    if rc != 0:
        o.problems = res.get("problems", [])
        return o
    o.nodes = res["nodes"]
    o.knowledge = res["knowledge"]
    o.check_rc, _, _ = _cli(proj, env, "check", vid, *([] if own_env else ["--no-python"]))
    again = [a for a in base if a not in ("--comfyui-ref", "v0.3.75")]  # the same command, the version now exists
    o.relock_rc, out, o.warm_s = _cli(proj, env, *again)
    o.warm_s = round(o.warm_s, 2)
    if o.relock_rc == 0:
        warm = json.loads(out)
        o.relock_added = warm["added_models"] + warm["added_nodes"]
        o.proof_warm_s = round(warm.get("proof_seconds") or 0.0, 2)
    return o


# why a corpus workflow does not lock here, by the first problem's text (see `classify`)
UNSERVABLE = "a pack the corpus lacks"
NEWER_CORE = "a core newer than 0.3.75 (whose requirements the probe's interpreter lacks)"
INTERPRETER = "a pack the probe's interpreter cannot import"
OFFLINE_UNKNOWN = "a class of a corpus pack that no offline data names"
REASONS = [
    (re.compile(r"git ls-remote failed: .*repository '.*/([^/]+/[^/]+)/' not found"), UNSERVABLE),
    (re.compile(r"built into ComfyUI [0-9.]+ but not in the locked core"), NEWER_CORE),
    # the probe's interpreter (the test venv: ComfyUI 0.3.75's requirements, torch 2.14.1, no torchaudio) lacks
    # what some packs import (InstantID: insightface; comfy_mtb: onnxruntime, ...) or they download at import
    # (UltimateSDUpscale), so ComfyUI would not have their classes: refused, not written with a note
    (re.compile(r"(UltimateSDUpscale|InstantID\w*): the class is not registered when ComfyUI loads the version's nodes"
                r"|node comfy_mtb at \w+ does not register '[^']+ \(mtb\)' when ComfyUI loads it"), INTERPRETER),
]
REGISTRY_DOWN = re.compile(r"Comfy Registry lookup failed: the Comfy Registry at .* cannot be reached")
AMBIGUOUS = re.compile(r"\d+ packs in ComfyUI-Manager's node map provide it")


@functools.cache
def _corpus_sources() -> str:
    return "\n".join(f.read_text(errors="replace") for p in nodepacks.packs() for f in nodepacks.checkout(p).rglob("*.py"))


def classify(o: Outcome) -> str:
    """"locked", or why not: a pack the corpus lacks (its repository, or a class no corpus pack has: the registry
    or a choice between absent packs would name it), a class of a corpus pack that no offline data names (the
    Comfy Registry is down, ComfyUI-Manager's map lists the pack's newer class names), or one of `REASONS`."""
    if o.ok:
        return "locked"
    for pm in o.problems:
        text = pm["problem"]
        for rx, why in REASONS:
            if rx.search(text):
                return why
        if REGISTRY_DOWN.search(text) or AMBIGUOUS.search(text):
            cls = pm["item"].removeprefix("class ")
            if f'"{cls}"' not in _corpus_sources() and f"'{cls}'" not in _corpus_sources():
                return UNSERVABLE
    if all(REGISTRY_DOWN.search(pm["problem"]) for pm in o.problems):
        return OFFLINE_UNKNOWN
    return "other: " + (o.problems[0]["problem"][:120] if o.problems else "?")
