"""Revisions that fit the locked core: a pack the lock chose (not one the user pinned) whose revision does not import
when ComfyUI loads it (the runtime probe) is tried at its earlier releases, newest first, then at the commit the
workflow saved, each probed alone with the core, until one imports and registers what the workflows use.

Called by the lock's probe step (pipeline.probe_packs); `Fitted` says what was chosen and why, `Unfit` what was tried.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import cast

from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import GitLocked, GitOriginal, Lock
from comfyver.lock import probe, submodules
from comfyver.sources import gitsource, resolve

MAX_TRIES = 4  # earlier revisions probed per pack (each is one ComfyUI node load)


@dataclass(frozen=True)
class Candidate:
    ref: str          # a tag, or the commit the workflow saved
    why: str          # "release v1.2.0", "the commit the workflow saved"


@dataclass
class Fitted:
    name: str
    original: GitOriginal
    locked: GitLocked
    classes: list[str]
    note: str


@dataclass
class Unfit:
    name: str
    tried: list[str] = field(default_factory=list)   # "v1.2.0: <why it failed>"


Probe = Callable[[Lock], probe.ProbeResult]


def candidates(url: str, rev: str, saved: str | None, what: str) -> list[Candidate]:
    """Other revisions to try for a pack locked at `rev`: where `rev` is a release and the default branch has moved
    on, its head first (a release years old rarely fits a newer core); then its release tags newest first (those
    older than `rev` when `rev` is itself a release; else every release but `rev`), then the commit the workflow
    saved."""
    try:
        refs, head = gitsource.ls_remote(url, what)
    except ComfyverError:
        refs, head = {}, None
    tags = gitsource.release_tags(refs)
    at = next((i for i, (_, sha) in enumerate(tags) if sha == rev), None)
    older = tags[at + 1:] if at is not None else [(t, sha) for t, sha in tags if sha != rev]
    out = [Candidate(t, f"release {t}") for t, _ in older]
    if at is not None and head and refs.get(head) not in (None, rev):
        out.insert(0, Candidate(head.removeprefix("refs/heads/"), "the default branch head (newer than the release)"))
    if saved and saved != rev and not any(sha == saved for _, sha in older):
        out.append(Candidate(saved, "the commit the workflow saved"))
    return out[:MAX_TRIES]


def fit(lock: Lock, name: str, needed: Collection[str], error: str, saved: str | None, run: Probe) -> Fitted | Unfit:
    """Try `name`'s earlier revisions (see `candidates`) with the lock's core; the first that imports and registers
    every class in `needed` wins."""
    node = lock["nodes"][name]
    loc, orig = node["locked"], node["original"]
    if loc["type"] != "git" or orig["type"] != "git":
        return Unfit(name, ["not a git source: earlier releases are not tried"])
    url, what = orig["url"], f"node {name}"
    out = Unfit(name)
    for c in candidates(url, loc["rev"], saved, what):
        original = cast(GitOriginal, {k: v for k, v in orig.items() if k != "ref"} | {"ref": c.ref})
        try:
            locked = cast(GitLocked, resolve.lock_items([resolve.Item(f"nodes.{name}", "git", original)],
                                                        progress=False)[f"nodes.{name}"])
        except resolve.ResolveFailed as exc:
            out.tried.append(f"{c.ref}: {next(iter(exc.failures.values()))[-200:]}")
            continue
        locked = submodules.with_submodules({name: (original, locked)})[0].get(name, locked)  # as Manager installs
        trial = copy.deepcopy(lock)
        trial["nodes"] = {name: {"original": original, "locked": locked}}
        got = run(trial)["packs"].get(name)
        if got is None or not got["ok"]:
            out.tried.append(f"{c.ref}: does not import either ({((got and got['error']) or '')[-160:]})")
            continue
        lacking = sorted(set(needed) - set(got["classes"]))
        if lacking:
            out.tried.append(f"{c.ref}: imports but lacks {', '.join(lacking[:5])}")
            continue
        first = error.strip().splitlines()[-1] if error.strip() else "import failed"
        note = (f"node {name}: {loc['rev'][:12]} does not import on the locked ComfyUI ({first[-200:]}); locked "
                f"{c.why} ({locked['rev'][:12]}), the first that imports and registers what the workflows use"
                + (f" (tried first: {'; '.join(out.tried)})" if out.tried else "")
                + "; or keep the newer pack with a newer core: --comfyui-ref <tag>")
        return Fitted(name, original, locked, sorted(got["classes"]), note)
    return out
