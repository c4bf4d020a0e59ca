"""Revisions that fit the locked core: a pack the lock chose (not one the user pinned) whose revision does not import
when ComfyUI loads it (the runtime probe) is tried at its earlier releases, newest first, then at the commit the
workflow saved, each probed alone with the core, until one imports and registers what the workflows use. A pack from
the Comfy Registry is tried at its earlier published versions (active, not deprecated), newest first; a version whose
`supported_comfyui_version` excludes the locked core's release is not tried (said in what was tried).

Called by the lock's probe step (pipeline.probe_packs); `Fitted` says what was chosen and why, `Unfit` what was tried.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import cast

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import GitOriginal, Lock, NodeLocked, NodeOriginal, RegistryOriginal
from comfyver.lock import probe, submodules
from comfyver.sources import gitsource, registry, resolve

MAX_TRIES = 4  # earlier revisions probed per pack (each is one ComfyUI node load)


@dataclass(frozen=True)
class Candidate:
    ref: str          # a tag, the commit the workflow saved, or a registry version
    why: str          # "release v1.2.0", "the commit the workflow saved", "registry version 1.1.0"


@dataclass
class Fitted:
    name: str
    original: NodeOriginal
    locked: NodeLocked
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


def core_release(lock: Lock) -> Version | None:
    """The locked core's release: its ref (`v0.3.75`), else the tag the lock resolved it to (`latest` ->
    `refs/tags/v0.3.75`); None when it is locked at no release (a branch, a commit)."""
    core = lock["comfyui"]
    for ref in (core["original"].get("ref", ""), core["locked"].get("ref", "")):
        m = re.fullmatch(r"(?:refs/tags/)?v?(\d+\.\d+(?:\.\d+)*)", ref)
        if m:
            return Version(m[1])
    return None


def registry_candidates(node_id: str, version: str, core: Version | None, what: str,
                        skipped: list[str]) -> list[Candidate]:
    """Published versions of a registry node older than `version`, newest first; those whose
    supported_comfyui_version excludes `core` are appended to `skipped` instead."""
    try:
        current = Version(version)
        listed = registry.published(node_id, what)
    except (InvalidVersion, ComfyverError):
        return []
    older: dict[Version, registry.Published] = {}
    for p in listed:
        try:
            v = Version(p.version)
        except InvalidVersion:
            continue
        # a version written as its canonical form only (the registry's `1.0.2`; never `01.0`, ` 1.0`), once each
        if p.version == str(v) and v < current and not p.deprecated:
            older.setdefault(v, p)
    out: list[Candidate] = []
    excluded: list[str] = []
    for _, p in sorted(older.items(), reverse=True):
        spec = p.supported_comfyui
        try:
            fits = core is None or spec is None or core in SpecifierSet(spec)
        except InvalidSpecifier:
            fits = True
        if not fits:
            excluded.append(f"{p.version}: the registry says it supports ComfyUI {(spec or '')[:60]}, not {core}")
        elif len(out) < MAX_TRIES:
            out.append(Candidate(p.version, f"registry version {p.version}"))
    skipped += excluded[:3] + ([f"{len(excluded) - 3} more versions the registry says do not support ComfyUI {core}"]
                               if len(excluded) > 3 else [])
    return out


def fit(lock: Lock, name: str, needed: Collection[str], error: str, saved: str | None, run: Probe) -> Fitted | Unfit:
    """Try `name`'s earlier revisions (see `candidates`, `registry_candidates`) with the lock's core; the first that
    imports and registers every class in `needed` wins."""
    node = lock["nodes"][name]
    loc, orig = node["locked"], node["original"]
    what = f"node {name}"
    out = Unfit(name)
    trials: list[tuple[Candidate, NodeOriginal]]
    if orig["type"] == "registry" and loc["type"] == "zip" and "version" in loc:
        trials = [(c, cast(RegistryOriginal, {"type": "registry", "id": orig["id"], "version": c.ref}))
                  for c in registry_candidates(orig["id"], loc["version"], core_release(lock), what, out.tried)]
    elif loc["type"] == "git" and orig["type"] == "git":
        trials = [(c, cast(GitOriginal, {k: v for k, v in orig.items() if k != "ref"} | {"ref": c.ref}))
                  for c in candidates(orig["url"], loc["rev"], saved, what)]
    else:
        return Unfit(name, ["neither a git nor a registry source: earlier releases are not tried"])
    for c, original in trials:
        try:
            locked = cast(NodeLocked, resolve.lock_items([resolve.Item(f"nodes.{name}", resolve.kind_of(original),
                                                                       original)], progress=False)[f"nodes.{name}"])
        except resolve.ResolveFailed as exc:
            out.tried.append(f"{c.ref}: {next(iter(exc.failures.values()))[-200:]}")
            continue
        if locked["type"] == "git":  # with its submodules, as Manager installs
            locked = submodules.with_submodules({name: (cast(GitOriginal, original), locked)})[0].get(name, locked)
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
        at = loc["rev"][:12] if loc["type"] == "git" else f"version {loc.get('version')}"
        got_at = locked["rev"][:12] if locked["type"] == "git" else locked["hash"]
        note = (f"node {name}: {at} does not import on the locked ComfyUI ({first[-200:]}); locked "
                f"{c.why} ({got_at}), the first that imports and registers what the workflows use"
                + (f" (tried first: {'; '.join(out.tried)})" if out.tried else "")
                + "; or keep the newer pack with a newer core: --comfyui-ref <tag>")
        return Fitted(name, original, locked, sorted(got["classes"]), note)
    return out
