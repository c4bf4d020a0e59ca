"""A node pack is installed as ComfyUI-Manager installs it: a git pack whose tree has a `.gitmodules` comes with its
submodules (Manager clones with `--recursive`). Without them some packs fetch the missing code themselves when
ComfyUI imports them (ComfyUI_UltimateSDUpscale downloads its submodule's script: offline, or in a locked image,
the import fails). Applies to packs whose original does not say `submodules` (`--node <url>` with
`add-node --submodules` says it); a pack whose submodules cannot be fetched keeps none, with a note.
"""

from __future__ import annotations

from typing import cast

from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import GitLocked, GitOriginal
from comfyver.sources import gitsource, resolve


def has_gitmodules(loc: GitLocked, what: str) -> bool:
    """Whether the pinned tree has a `.gitmodules` (read from the git cache; the rev is fetched if it is not there)."""
    try:
        repo = gitsource.fetch(loc["url"], loc["rev"], what)
    except ComfyverError:
        return False
    return gitsource.git("cat-file", "-e", f"{loc['rev']}:.gitmodules", cwd=repo, what=what, check=False).returncode == 0


def with_submodules(packs: dict[str, tuple[GitOriginal, GitLocked]], *, jobs: int = resolve.DEFAULT_JOBS,
                    progress: bool = False) -> tuple[dict[str, GitLocked], list[str]]:
    """For each pack (name -> its original and its lock without submodules) that should have its submodules, the
    lock with them; and a note per pack: what was done, or why it keeps none."""
    want = {name: cast(GitOriginal, {**o, "submodules": True}) for name, (o, loc) in packs.items()
            if "submodules" not in o and not loc.get("submodules") and has_gitmodules(loc, f"node {name}")}
    if not want:
        return {}, []
    items = [resolve.Item(f"nodes.{n}", "git", {**o, "ref": packs[n][1]["rev"]}) for n, o in want.items()]
    try:
        got, failures = resolve.lock_items(items, jobs=jobs, progress=progress), {}
    except resolve.ResolveFailed as exc:
        got, failures = exc.results, exc.failures
    out: dict[str, GitLocked] = {}
    notes: list[str] = []
    for name in want:
        loc = cast(GitLocked | None, got.get(f"nodes.{name}"))
        if loc is not None:
            ref = packs[name][1].get("ref")  # the ref it was resolved from, not the rev it was pinned at
            fixed: GitLocked = {"type": "git", "url": loc["url"], "rev": loc["rev"], "hash": loc["hash"],
                                "submodules": True}
            out[name] = {"type": "git", "url": loc["url"], "rev": loc["rev"], "ref": ref, "hash": loc["hash"],
                         "submodules": True} if ref else fixed
            notes.append(f"node {name}: locked with its git submodules (.gitmodules), as ComfyUI-Manager installs it")
        else:
            why = failures.get(f"nodes.{name}", "")
            notes.append(f"node {name}: has git submodules (.gitmodules) that could not be fetched ({why[-200:]}); "
                         "locked without them: the pack may fetch them itself when ComfyUI imports it")
    return out, notes
