"""Git inputs: resolve a ref, fetch exactly one rev into a shared cache, hash, export.

Refs: `latest` (newest semver tag, else the default branch), `nightly` (default
branch head), a tag, a branch, or a full or short commit. The hash is the SRI
NAR hash of the checkout without `.git`, i.e. what `pkgs.fetchgit` checks.

The cache holds one bare repository per URL (`<cache>/git/<sha>.git`), guarded
by a file lock. URLs and refs are checked so that neither can be read as a git
option, and every git call puts `--` before user input.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock
from packaging.version import InvalidVersion, Version

from comfyver.base import nar, project, web
from comfyver.base.errors import ComfyverError, Reason, UsageError
from comfyver.base.lockfile import GitLocked, GitOriginal
from comfyver.sources import resolvecache

# the cache repos are ours: no auto gc/maintenance (pins keep what matters), no FETCH_HEAD
FETCH_OPTS = ("--quiet", "--no-auto-gc", "--no-auto-maintenance", "--no-write-fetch-head", "--no-show-forced-updates")
GIT_SCHEMES = ("https", "http", "file", "ssh", "git")
HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
SHORT_HEX = re.compile(r"^[0-9a-f]{7,39}\Z")
TRANSFORM_ATTRS = re.compile(rb"(^|\s)(filter|eol|text|crlf|ident|working-tree-encoding)(=|\s|$)", re.M)
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1",
           "LC_ALL": "C"}
# what git (LC_ALL=C) says when the repository or the ref/commit asked for is not there: Reason.NOT_FOUND
GIT_NOT_FOUND = re.compile(r"not found|couldn't find remote ref|unknown revision|no such ref", re.I)


@dataclass
class Resolved:
    rev: str
    ref: str | None  # the full ref name it came from (refs/tags/v1.2), None for a commit


def node_name_for_url(url: str) -> str:
    """A node's lock name from its repository URL: the repository name (no `.git`, no query), lowercased (the
    registry's convention), characters outside [a-z0-9._-] as '-', starting with a letter or digit, at most 100
    characters (lockfile.NODE_NAME_RE); "" when the URL names none. The one rule (`--node URL` and the lock's
    node map both read it)."""
    base = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    base = base[:-4] if base.endswith(".git") else base
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-._")[:100].lower()


def check_url(url: str, what: str) -> str:
    if not isinstance(url, str) or not url or url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise UsageError(f"{what}: {url!r} is not a usable git URL (it could be read as a git option)")
    parts = urlsplit(url)
    if parts.scheme not in GIT_SCHEMES:
        raise UsageError(f"{what}: git URL scheme {parts.scheme or '(none)'!r} not allowed in {web.redact(url)!r}",
                         hint="use https://, http://, ssh://, git:// or file://")
    if parts.password or (parts.username and parts.scheme != "ssh"):  # ssh://git@host names a user, not a secret
        raise UsageError(f"{what}: {web.redact(url)!r} carries credentials in the URL (refused before any use)",
                         hint="drop the user/token from the URL; use a git credential helper or an ssh key")
    return url


def check_ref(ref: str, what: str) -> str:
    if (not ref or ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref) or ".." in ref
            or any(c in ref for c in "~^:?*[\\") or ref.endswith((".lock", "/", ".")) or "@{" in ref):
        raise UsageError(f"{what}: {ref!r} is not a valid git ref "
                         "(refused: it could be read as a git option or revision expression)")
    return ref


def git(*args: str, cwd: str | os.PathLike[str] | None = None, what: str = "git", input: bytes | None = None,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **GIT_ENV}
    p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, input=input)
    if check and p.returncode:
        err = web.redact(p.stderr.decode(errors="replace").strip())
        verb = next((a for a in args if not a.startswith("-") and "=" not in a), "git")
        last = err.splitlines()[-1] if err else "exit " + str(p.returncode)
        raise ComfyverError(f"{what}: git {verb} failed: {last}",
                            reason=Reason.NOT_FOUND if GIT_NOT_FOUND.search(last) else None)
    return p


def ls_remote(url: str, what: str) -> tuple[dict[str, str], str | None]:
    """All refs (tags peeled) and the default branch's ref name."""
    check_url(url, what)
    out = git("ls-remote", "--symref", "--", url, what=what).stdout.decode()
    refs: dict[str, str] = {}
    head_ref = None
    for line in out.splitlines():
        if line.startswith("ref: "):
            target, name = line[5:].split("\t")
            if name == "HEAD":
                head_ref = target
            continue
        sha, name = line.split("\t")
        if name.endswith("^{}"):
            refs[name[:-3]] = sha  # peeled tag wins over the tag object
        elif name not in refs:
            refs[name] = sha
    if head_ref is None and "HEAD" in refs:
        head_ref = next((n for n, s in refs.items() if n.startswith("refs/heads/") and s == refs["HEAD"]), None)
    return refs, head_ref


def _semver(tag: str) -> Version | None:
    try:
        v = Version(tag[1:] if tag[:1] in "vV" else tag)
    except InvalidVersion:
        return None
    return None if v.is_prerelease or v.is_devrelease else v


def release_tags(refs: dict[str, str]) -> list[tuple[str, str]]:
    """The release tags (semver, no pre-releases) among `refs` (ls_remote's) as (tag, commit), newest first."""
    tags = sorted(((v, n[10:]) for n in refs if n.startswith("refs/tags/") and (v := _semver(n[10:]))), reverse=True)
    return [(t, refs[f"refs/tags/{t}"]) for _, t in tags]


def resolve_ref(url: str, ref: str | None, what: str) -> Resolved:
    """Turn `ref` into a commit using `git ls-remote` (no fetch), except short commits."""
    ref = ref or "latest"
    check_ref(ref, what)
    if HEX40.match(ref):
        return Resolved(ref, None)
    refs, head = ls_remote(url, what)
    if ref == "latest":
        tags = [(v, n) for n in refs if n.startswith("refs/tags/") and (v := _semver(n[10:]))]
        if tags:
            _, name = max(tags)
            return Resolved(refs[name], name)
        ref = "nightly"
    if ref == "nightly":
        if not head or head not in refs:
            raise ComfyverError(f"{what}: {web.redact(url)} has no default branch (HEAD)")
        return Resolved(refs[head], head)
    for full in (ref if ref.startswith("refs/") else None, f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if full and full in refs:
            return Resolved(refs[full], full)
    if SHORT_HEX.match(ref):
        repo = fetch_all(url, what)
        p = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", cwd=repo, what=what, check=False)
        if p.returncode == 0:
            return Resolved(p.stdout.decode().strip(), None)
    raise ComfyverError(f"{what}: ref {ref!r} not found at {web.redact(url)}",
                        hint="use latest, nightly, a tag, a branch or a commit that the repository has",
                        reason=Reason.NOT_FOUND)


def cache_repo(url: str) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    return project.cache_dir() / "git" / f"{key}.git"


def _open_cache(url: str) -> Path:
    repo = cache_repo(url)
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".init-", dir=repo.parent))
        git("init", "--bare", "--quiet", str(tmp), what="git cache")
        (tmp / "comfyver-url").write_text(web.redact(url) + "\n")
        try:
            os.rename(tmp, repo)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won
    return repo


def has_commit(repo: Path, rev: str) -> bool:
    return git("cat-file", "-e", f"{rev}^{{commit}}", cwd=repo, check=False).returncode == 0


def fetch_all(url: str, what: str) -> Path:
    check_url(url, what)
    repo = _open_cache(url)
    with FileLock(str(repo) + ".lock"):
        git("fetch", *FETCH_OPTS, "--force", "--no-tags", "--", url,
            "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", cwd=repo, what=what)
    return repo


def fetch(url: str, rev: str, what: str, offline: bool = False) -> Path:
    """Make sure the cache repo for `url` has commit `rev`; return the repo path.

    A fetched rev is pinned under refs/pins/ (kept from gc, and nameable for local
    clones), so a pinned rev needs no git call at all."""
    check_url(url, what)
    if not HEX40.match(rev):
        raise UsageError(f"{what}: locked rev {rev!r} is not a 40-hex commit")
    repo = _open_cache(url)
    if _pinned(repo, rev):
        return repo
    with FileLock(str(repo) + ".lock"):
        if not has_commit(repo, rev):
            if offline:
                raise ComfyverError(f"{what}: commit {rev} is not in the local cache and --offline was given",
                                    hint="run `comfyver fetch <id>` while online first")
            # one rev, shallow: servers allow wanting a reachable commit (protocol v2)
            p = git("fetch", *FETCH_OPTS, "--depth", "1", "--no-tags", "--", url, rev, cwd=repo, what=what, check=False)
            if p.returncode or not has_commit(repo, rev):
                git("fetch", *FETCH_OPTS, "--force", "--no-tags", "--", url,
                    "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", cwd=repo, what=what)
                if not has_commit(repo, rev):
                    raise ComfyverError(f"{what}: commit {rev} is no longer reachable at {web.redact(url)} "
                                        "(deleted, or a branch was force-pushed past it)",
                                        hint="re-lock to a commit that exists: `comfyver update <id> <input>`",
                                        reason=Reason.NOT_FOUND)
        git("update-ref", f"refs/pins/{rev}", rev, cwd=repo, what=what)
    return repo


def check_remote_has(url: str, rev: str, what: str) -> None:
    """Ask the remote itself (never the cache) that it still serves commit `rev`: a fetch of that one commit
    into a scratch repository. Raises naming a vanished repository or a vanished commit."""
    import tempfile

    check_url(url, what)
    with tempfile.TemporaryDirectory(prefix="comfyver-remote-") as tmp:
        git("init", "-q", "--bare", tmp, what=what)
        p = git("fetch", *FETCH_OPTS, "--depth", "1", "--no-tags", "--", url, rev, cwd=tmp, what=what, check=False)
        if p.returncode == 0 and has_commit(Path(tmp), rev):
            return
        if git("ls-remote", "--", url, "HEAD", cwd=tmp, what=what, check=False).returncode != 0:
            raise ComfyverError(f"{what}: the repository {web.redact(url)} cannot be reached any more (gone, "
                                "renamed or private?)", hint="find where it moved and re-lock the input there")
        raise ComfyverError(f"{what}: commit {rev} is no longer reachable at {web.redact(url)} "
                            "(deleted, or a branch was force-pushed past it)",
                            hint="re-lock to a commit that exists: `comfyver update <id> <input>`",
                            reason=Reason.NOT_FOUND)


def _pinned(repo: Path, rev: str) -> bool:
    return (repo / "refs" / "pins" / rev).exists() or git(
        "show-ref", "--verify", "--quiet", f"refs/pins/{rev}", cwd=repo, check=False).returncode == 0


def needs_checkout(repo: Path, rev: str, tree: nar.GitTree | None = None) -> bool:
    """True if .gitattributes ask git to transform content on checkout (eol, filters...)."""
    tree = tree or nar.git_tree(str(repo), rev)
    return any(TRANSFORM_ATTRS.search(git("cat-file", "blob", oid.decode(), cwd=repo).stdout) for oid in tree.attributes)


def export(repo: Path, rev: str, dest: Path, url: str, submodules: bool, what: str) -> None:
    """Write the checkout of `rev` (no .git) into the empty or missing folder `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if submodules:
        git("init", "--quiet", str(dest), what=what)
        git("fetch", "--quiet", "--depth", "1", "--", str(repo), f"refs/pins/{rev}", cwd=dest, what=what)
        git("-c", "advice.detachedHead=false", "checkout", "--quiet", rev, cwd=dest, what=what)
        git("remote", "add", "origin", "--", url, cwd=dest, what=what)
        git("-c", "protocol.file.allow=always", "submodule", "update", "--init", "--recursive", "--quiet", cwd=dest, what=what)
        for d, dirs, _files in os.walk(dest):
            for name in (".git",):
                p = Path(d) / name
                if p.is_dir():
                    shutil.rmtree(p)
                    dirs.remove(name)
                elif p.exists():
                    p.unlink()
        return
    with tempfile.TemporaryDirectory(prefix="comfyver-index-") as idx:
        env = {"GIT_INDEX_FILE": os.path.join(idx, "index"), "GIT_DIR": str(repo), "GIT_WORK_TREE": str(dest)}
        for args in (["read-tree", rev], ["checkout-index", "--all", "--force"]):
            proc = subprocess.run(["git", *args], env={**os.environ, **GIT_ENV, **env}, capture_output=True, cwd=dest)
            if proc.returncode:
                raise ComfyverError(f"{what}: git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")


def nar_hash_rev(repo: Path, rev: str, url: str, submodules: bool, what: str) -> str:
    """SRI NAR hash of the checkout of `rev` without .git.

    Fast path: straight from git objects. A checkout is written only where git
    would change bytes on checkout (attributes) or submodules are wanted."""
    if not submodules:
        tree = nar.git_tree(str(repo), rev)
        if not needs_checkout(repo, rev, tree):
            return nar.to_sri(nar.git_tree_nar_hash(str(repo), rev, tree))
    with tempfile.TemporaryDirectory(prefix="comfyver-checkout-") as tmp:
        dest = Path(tmp) / "src"
        export(repo, rev, dest, url, submodules, what)
        return nar.to_sri(nar.nar_hash(dest))


def lock(original: GitOriginal, what: str) -> GitLocked:
    """original {type: git, url, ref?, submodules?} -> locked {type, url, rev, ref?, hash, submodules}."""
    url = check_url(original["url"], what)
    submodules = bool(original.get("submodules", False))
    res = resolve_ref(url, original.get("ref"), what)
    hit = resolvecache.get("git", url, res.rev, submodules)
    sri: str
    if hit:
        sri = hit["hash"]
    else:
        repo = fetch(url, res.rev, what)
        sri = resolvecache.put({"hash": nar_hash_rev(repo, res.rev, url, submodules, what)},
                               "git", url, res.rev, submodules)["hash"]
    if res.ref:  # the keys in the lock's order
        return {"type": "git", "url": url, "rev": res.rev, "ref": res.ref, "hash": sri, "submodules": submodules}
    return {"type": "git", "url": url, "rev": res.rev, "hash": sri, "submodules": submodules}
