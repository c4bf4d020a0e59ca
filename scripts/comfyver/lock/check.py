"""Consistency of a version, for CI: the lock, its workflows, its Python lock.

A version is consistent when
- version.json is valid (schema + rules) and its id matches its folder;
- every workflow it lists exists, and every file in workflows/ is listed;
- every class its workflows use is built into the locked core or provided by a locked
  node (`provides`, `choices`, overrides.json), and every model they load is locked;
- the lock's proof passes (lock/proof.py, against the version's cached runtime probe, else the static scan):
  every model value among the options its loader input would offer;
- pyproject.toml is exactly what `comfyver lock` generates from the locked core and
  nodes today, and uv.lock was made from that pyproject (same root requirements).
Each problem names the version, the item and the command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

from comfyver.base import lockfile, project
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import Lock
from comfyver.lock import analyze, nodemap, nodesource, probe, proof, pylock, versions


class ProblemRow(TypedDict):
    """A problem as `lock --json` and `check --json` print it."""
    item: str
    problem: str
    fix: str
    workflows: NotRequired[list[str]]
    used_by: NotRequired[list[str] | None]


@dataclass(frozen=True)
class Problem:
    """One item of a version that is wrong (cannot be locked, or is inconsistent), with the flag, command or lock
    field that fixes it: a row of `lock`'s fix table (pipeline.LockProblems) and of `check`."""
    item: str                            # "class <name>", "model <folder>/<name>", "nodes.<name>", ...
    problem: str
    fix: str
    workflows: list[str] | None = None   # a class's: the workflows that use it
    used_by: list[str] | None = None     # a model's: what uses it
    used_by_first: bool = False          # a bad model name or URL: `lock --json` has always listed used_by first

    @property
    def class_name(self) -> str | None:
        """The class a problem is about (its item is "class <name>"), else None."""
        return self.item.removeprefix("class ") if self.item.startswith("class ") else None

    def to_json(self) -> ProblemRow:
        """The row `lock --json` and `check --json` print under "problems" (keys in the order they always had)."""
        out: ProblemRow
        if self.used_by_first:
            out = {"item": self.item, "problem": self.problem, "used_by": self.used_by, "fix": self.fix}
        else:
            out = {"item": self.item, "problem": self.problem, "fix": self.fix}
        if self.workflows is not None:
            out["workflows"] = self.workflows
        if self.used_by is not None and not self.used_by_first:
            out["used_by"] = self.used_by
        return out


def check_version(root: Path, vid: str, *, python: bool = True) -> list[Problem]:
    vdir = project.version_dir(root, vid)
    try:
        lock = versions.load(root, vid)
    except ComfyverError as exc:
        return [Problem("version.json", exc.message, exc.hint or "fix the lock file or re-create the version")]
    problems: list[Problem] = []
    relock = f"comfyver lock {vid} --workflow <file>"
    listed = set(lock["workflows"])
    present = {f"workflows/{p.name}" for p in (vdir / "workflows").glob("*.json")} if (vdir / "workflows").is_dir() else set()
    for w in sorted(listed - present):
        problems.append(Problem(w, "listed in the lock but missing", "restore the file, or remove it from $.workflows"))
    for w in sorted(present - listed):
        problems.append(Problem(w, "in workflows/ but not in the lock", f"comfyver lock {vid} --workflow {vdir / w}"))
    wfs = []
    for w in sorted(listed & present):
        try:
            wfs.append(analyze.load(vdir / w))
        except ComfyverError as exc:
            problems.append(Problem(w, exc.message, "re-export the workflow from ComfyUI"))
    try:
        problems += _coverage(lock, vdir, wfs, relock)
    except ComfyverError as exc:
        problems.append(Problem("sources", exc.message, exc.hint or "check the locked URLs and your network"))
    try:
        problems += proof_problems(lock, vdir, wfs)
    except ComfyverError as exc:
        problems.append(Problem("proof", exc.message, exc.hint or "check the locked URLs and your network"))
    if python:
        problems += _python(lock, vdir, vid)
        if (vdir / "uv.lock").is_file():
            why = pylock.profile_problem(lock, (vdir / "uv.lock").read_text())
            if why:
                problems.append(Problem("python.torch", why, 'name what is locked: "pypi" for PyPI\'s CUDA wheels, '
                                        "or the cuXYZ of the PyTorch index the lock came from"))
            if why := pylock.family_problem((vdir / "uv.lock").read_text()):
                problems.append(Problem("uv.lock", why, f"comfyver lock {vid} (locks torch, torchvision and "
                                        "torchaudio to one torch)"))
    return problems


def _coverage(lock: Lock, vdir: Path, wfs: list[analyze.Workflow], relock: str) -> list[Problem]:
    if not wfs:
        return []
    mgr = nodemap.manager()
    nm, inputs = nodemap.for_lock(lock, vdir, registry=False, manager_data=mgr)
    rep = analyze.report(wfs, nm, inputs, mgr)
    analyze.settle_folders_from_lock(rep.models, lock["models"])
    out: list[Problem] = []
    linked = {u.class_type for wf in wfs for u in wf.nodes if u.linked}
    # frontend-only nodes of locked packs, as lock decided them
    js_only = nodesource.frontend_only(lock["nodes"], {c for c, e in rep.unresolved.items() if e["active"] and c not in linked})
    for c, e in rep.unresolved.items():
        if e["active"] and c not in js_only:
            out.append(Problem(f"class {c}", f"{e['why']} (used in {', '.join(e['workflows'])})",
                               f"{relock} --node <url>, or add it to overrides.json"))
    for c, e in rep.ambiguous.items():
        if e["active"]:
            out.append(Problem(f"class {c}", f"{e['why']}: {', '.join(e['candidates'])}", f"{relock} --choose '{c}=<node>'"))
    for name, p in rep.packs.items():
        if p["active"] and name not in lock["nodes"]:
            out.append(Problem(f"node {name}", f"needed for {', '.join(p['classes'])} but not in the lock", relock))
    for key, m in rep.models.items():
        if not m["active"]:
            continue
        if m["folder"] is None:
            out.append(Problem(f"model {m['name']}", "folder unknown", f"{relock} --model <folder>/{m['name']}=<url>"))
        elif key not in lock["models"]:
            out.append(Problem(f"model {key}", f"used by {m['used_by'][0]} but not in the lock",
                               f"{relock} --model '{key}=<url>'" if "url" not in m else relock))
    return out


def knowledge(lock: Lock, vdir: Path) -> proof.Knowledge:
    """What the proof checks against: the version's cached runtime probe (`comfyver probe`, keyed by its uv.lock;
    else the probe `lock --probe` proved it with), else the static scan of the locked sources."""
    ul = vdir / "uv.lock"
    result = probe.cached(lock, ul.read_bytes() if ul.is_file() else b"")
    if result is not None:
        return proof.from_probe(result)
    _, inputs = nodemap.for_lock(lock, vdir, registry=False, manager_data=nodemap.manager())
    return proof.from_scan(inputs)


def proof_problems(lock: Lock, vdir: Path, wfs: list[analyze.Workflow]) -> list[Problem]:
    """The lock's proof (lock/proof.py), as `lock` runs it: a class ComfyUI does not register, a model value its
    loader input does not offer from the lock. A value the lock holds under no key of its file name is a missing
    model, named by the coverage above."""
    if not wfs:
        return []
    know = knowledge(lock, vdir)
    out = []
    for p in proof.prove(lock, wfs, know, {str(vdir / w): w for w in lock["workflows"]}):
        if p.kind == "model-not-offered" and not (p.closest and p.closest.rsplit("/", 1)[-1]
                                                  == (p.value or "").replace("\\", "/").rsplit("/", 1)[-1]):
            continue
        out.append(Problem(p.item, f"{p.problem} (proof, from the {know.source})", p.fix))
    return out


def _python(lock: Lock, vdir: Path, vid: str) -> list[Problem]:
    pp, ul = vdir / "pyproject.toml", vdir / "uv.lock"
    fix = f"comfyver lock {vid} (regenerates pyproject.toml and uv.lock)"
    if not pp.is_file() or not ul.is_file():
        return [Problem("python", "pyproject.toml / uv.lock missing", fix)]
    want, _, _ = pylock.generate(lock)
    have = pp.read_text()
    if pylock.without_family_pins(have) != want:
        return [Problem("pyproject.toml", "out of date with the locked ComfyUI and nodes' requirements", fix)]
    name, requires = pylock.project_requires(have)
    locked = pylock.locked_requires(ul.read_text(), name)
    if locked is None:
        return [Problem("uv.lock", f"has no entry for the project {name!r}", fix)]
    if pylock.requires_key(locked) != pylock.requires_key(requires):
        return [Problem("uv.lock", "was not made from this pyproject.toml (requirements differ: "
                                   f"{sorted(set(requires) ^ set(locked))[:5]})", fix)]
    return []


def check_all(root: Path, vids: list[str] | None = None, *, python: bool = True) -> dict[str, list[ProblemRow]]:
    """Each version's problems, as `check --json` prints them."""
    ids = vids or project.version_ids(root)
    for v in ids:
        lockfile.check_version_id(v)
    return {v: [p.to_json() for p in check_version(root, v, python=python)] for v in ids}
