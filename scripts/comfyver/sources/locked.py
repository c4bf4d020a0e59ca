"""One locked core or node source (`GitLocked` / `ZipLocked` of the lock): fetched, placed and checked, in one place.

Every reader of a locked source goes through here (realize, the probe, the scans of pylock and nodesource,
`recheck`), so the rule is written once:

- fetch: git, the commit into gitsource's cache repository (pinned there); zip, the archive into
  `<cache>/archives/<hash>.zip`, named by the NAR hash it must unpack to (`offline`: the caches only);
- place: the checkout of `rev` without `.git`, or the archive unpacked (`stripRoot` as locked), at `dest`;
- check: the NAR hash of what was placed against the lock's `hash`; a mismatch raises `HashMismatch`, and a
  cached archive that does not unpack to the locked tree is deleted (the next run downloads it again).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from filelock import FileLock

from comfyver.base import nar, project, web
from comfyver.base.errors import ComfyverError
from comfyver.base.lockfile import NodeLocked, ZipLocked
from comfyver.sources import archive, download, gitsource


class HashMismatch(ComfyverError):
    """A placed source whose NAR hash (`got`) is not the lock's (`expected`)."""

    def __init__(self, what: str, got: str, expected: str) -> None:
        super().__init__(f"{what}: NAR hash of the checkout is {got}, the lock says {expected}",
                         hint="the source changed after locking (force-push or tampered cache); "
                              "re-lock with `comfyver update`, or clear the cache entry")
        self.got = got
        self.expected = expected


def archive_path(locked: ZipLocked) -> Path:
    """Where a locked archive is cached: named by the NAR hash of the tree it must unpack to."""
    return project.cache_dir() / "archives" / (nar.parse_hash(locked["hash"]).hex() + ".zip")


def fetch(locked: NodeLocked, what: str, *, offline: bool = False) -> Path:
    """Make the cache hold a locked source; return the git cache repository (with `rev`) or the cached archive.
    `offline`: nothing is downloaded; a source not cached is an error that says how to fill the cache."""
    if locked["type"] == "git":
        return gitsource.fetch(locked["url"], locked["rev"], what, offline=offline)
    path = archive_path(locked)
    if path.is_file():
        return path
    if offline:
        raise ComfyverError(f"{what}: archive {web.redact(locked['url'])} is not cached and --offline was given",
                            hint="run `comfyver fetch <id>` while online first")
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            download.download(locked["url"], path, what=what)
    return path


def check(tree: Path, locked: NodeLocked, what: str) -> None:
    """Raise `HashMismatch` unless the NAR hash of `tree` is the lock's."""
    got = nar.to_sri(nar.nar_hash(tree))
    if got != locked["hash"]:
        raise HashMismatch(what, got, locked["hash"])


def _unpack(zpath: Path, dest: Path, locked: ZipLocked, what: str) -> None:
    """Unpack the archive at `zpath` into the new folder `dest` as locked, and check its NAR hash."""
    try:
        archive.extract_zip(zpath, dest, strip_root=locked["stripRoot"], what=what)  # names corrupt entries itself
        check(dest, locked, what)
    except OSError as exc:
        raise ComfyverError(f"{what}: archive {web.redact(locked['url'])} is damaged: {exc}",
                            hint="run again to download it afresh; if it persists, the source changed") from None


def place(locked: NodeLocked, dest: Path, what: str, *, offline: bool = False) -> None:
    """Write a locked source's tree at `dest` (git: into an empty or missing folder; zip: `dest` must not exist)
    from the caches, and check its NAR hash against the lock."""
    if locked["type"] == "git":
        repo = fetch(locked, what, offline=offline)
        gitsource.export(repo, locked["rev"], dest, locked["url"], locked["submodules"], what)
        check(dest, locked, what)
        return
    zpath = fetch(locked, what, offline=offline)
    try:
        _unpack(zpath, dest, locked, what)
    except ComfyverError:
        zpath.unlink(missing_ok=True)  # a wrong archive is not kept for next time
        raise


def recheck(locked: NodeLocked, what: str) -> None:
    """Check a locked source by its pin alone, placing nothing: the git remote itself must still serve `rev`
    (not only the cache), and an archive is downloaded afresh; then its NAR hash is compared with the lock's."""
    if locked["type"] == "git":
        gitsource.check_remote_has(locked["url"], locked["rev"], what)
        repo = fetch(locked, what)
        got = gitsource.nar_hash_rev(repo, locked["rev"], locked["url"], locked["submodules"], what)
        if got != locked["hash"]:
            raise HashMismatch(what, got, locked["hash"])
        return
    with tempfile.TemporaryDirectory(prefix="comfyver-recheck-") as tmp:
        z = Path(tmp) / "node.zip"
        download.download(locked["url"], z, what=what)
        _unpack(z, Path(tmp) / "tree", locked, what)
