"""`comfyver import <id> --from-install DIR`: a ComfyUI install on this machine read into an import plan.

Read, never written: git runs with `--no-optional-locks` (no index refresh) and `core.fsmonitor=false`; files are
opened read-only with O_NOFOLLOW and checked to be the very file the scan saw (device, inode); folders are walked by
file descriptor, so a link swapped in mid-scan is never followed out of DIR. Nothing is followed: a link anywhere under
custom_nodes/ or models/, a file that is not a regular file, an unreadable one or a name with control characters is
a problem named in the error, all of them in one run.

- the core: DIR's git HEAD (a dirty tree, or a commit on no remote branch or tag, is a problem), else
  `comfyui_version.py`'s version as the release tag `v<version>` (the resolve step checks the tag exists);
- each `custom_nodes/*`: a git checkout -> its remote URL at its rev (changes, untracked files and unpushed commits are
  problems; Python byte-code caches are not changes), a Comfy Registry install (`.tracking` or pyproject
  `[tool.comfy]`) -> registry id @ version; `*.disabled` (and ComfyUI-Manager's `.disabled/`) left out and listed;
- models: every regular file under `models/<folder>/` hashed with sha256 (a thread pool; a stat cache in the cache
  folder keyed by path, size, mtime_ns, inode, device and ctime_ns makes an unchanged re-import hash nothing), recorded as a
  local `file://` source with its sha256 and size (what `lock --model K=file://... --sha256 --size` records);
- `extra_model_paths.yaml` in DIR, read by ComfyUI's own rules (utils/extra_config.py): each section's `base_path`
  (`~` and `$VARS` expanded, relative to DIR), `is_default`, and one path a line (a `|` block holds several); each
  folder key as ComfyUI's folder_paths.map_legacy names it (`clip` -> `text_encoders`, `unet` -> `diffusion_models`).
  Its folders' files are read as models/ is (same rules, same hashing and cache). A folder inside DIR is opened
  from DIR by descriptor (a link on the way is a problem); one outside DIR is read only where the yaml names it by
  an absolute path (an absolute `base_path` or entry), and nothing inside it is followed. Where two folders give
  one key, the file ComfyUI finds first is kept (is_default folders, then models/, then the yaml's order);
- workflows: each regular `user/default/workflows/*.json` is offered (listed; read, by the inode the scan saw, only
  when the import copies them); links, subfolders and other files there are left out by name.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import stat
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock

from comfyver.base import fsutil, lockfile, project, ui, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import GitOriginal
from comfyver.lock import importers, nodescan
from comfyver.sources import gitsource, localnode, modelsearch, resolve

CHUNK = 1 << 20
CACHE_NAME = "install-hashes.json"      # in project.cache_dir()
EXTRA_YAML = "extra_model_paths.yaml"   # read by ComfyUI's main.py from its own folder
WORKFLOWS = "user/default/workflows"    # where ComfyUI's frontend saves the default user's workflows
WORKFLOW_LIMIT = 256 << 20
PLACEHOLDER = re.compile(r"put_\w*_here")  # ComfyUI's empty `models/<folder>/put_..._here` files
VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([0-9][0-9A-Za-z.+-]{0,40})["']""", re.M)
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                 "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES")
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


# ---------------------------------------------------------------- what an install holds

@dataclass(frozen=True)
class Problem:
    item: str      # `custom_nodes/X`, `models/a/b`, `ComfyUI` (names shown escaped when not printable)
    problem: str


class InstallProblems(ComfyverError):
    """Everything in DIR that cannot be pinned as it is, all at once."""

    def __init__(self, root: Path, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  {p.item}: {p.problem}" for p in problems)
        super().__init__(f"{root}: {len(problems)} item(s) of the install cannot be imported as they are:\n{lines}",
                         hint="commit and push local changes (or `git stash` them), rename a pack you do not need to "
                              "<name>.disabled, replace links by the files they point to, then import again; "
                              "nothing in the install was changed")


@dataclass(frozen=True)
class GitState:
    rev: str
    url: str | None                 # the remote's configured URL (origin, else the only remote)
    changed: list[str]              # tracked paths that differ from HEAD
    untracked: list[str]
    on_remote: bool                 # HEAD is on a remote-tracking branch or a tag this checkout knows
    submodules: bool                # the checkout has submodules (gitlinks in its index)


@dataclass(frozen=True)
class Core:
    source: Literal["git", "comfyui_version.py", "--comfyui-ref"]
    ref: str                        # the rev, `v<version>`, or the ref given (DIR holds no ComfyUI: Comfy Desktop)
    url: str | None
    version: str | None             # comfyui_version.py's version


@dataclass(frozen=True)
class NodeFound:
    folder: str                     # its folder name under custom_nodes/
    spec: str                       # `<url>@<rev>`, `<registry id>@<version>` (resolve.parse_node_spec), or its path
    kind: Literal["git", "registry", "local"]
    submodules: bool = False
    why_local: str = ""             # kind local (--allow-dirty): what keeps it from being pinned by a source


@dataclass(frozen=True)
class ModelFound:
    key: str                        # `<folder>/<rel>`, the lock's model key
    path: str                       # absolute path
    size: int
    sha256: str


@dataclass(frozen=True)
class ExtraFolder:
    """A folder `extra_model_paths.yaml` adds, and what was read of it."""
    entry: str                      # `<section>.<key>` in the yaml
    folder: str                     # ComfyUI's folder name (legacy names mapped): the model keys' first part
    path: str                       # the folder as ComfyUI normalizes it (os.path.normpath)
    outside: bool                   # outside DIR (read because the yaml names it by an absolute path)
    files: int                      # model files found in it
    note: str | None = None         # why nothing was read: missing, already read, not a model folder
    yaml: str = "extra_model_paths.yaml"  # the file that names it: DIR's own, or one given with --extra-model-paths-config


@dataclass
class HashStats:
    files: int = 0
    hashed: int = 0                 # files read and hashed in this run
    cached: int = 0                 # files whose sha256 came from the stat cache
    bytes_hashed: int = 0
    seconds: float = 0.0


@dataclass
class Install:
    dir: Path
    core: Core
    nodes: list[NodeFound] = field(default_factory=list)
    models: list[ModelFound] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    extra: list[ExtraFolder] = field(default_factory=list)
    workflows: list[_Seen] = field(default_factory=list)   # user/default/workflows/*.json (key: the file name)
    stats: HashStats = field(default_factory=HashStats)


@dataclass(frozen=True)
class _Seen:
    """A model file as the scan saw it (lstat)."""
    key: str
    path: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    item: str                       # as problems name it: `models/a/b`, `<DIR-relative or absolute folder>/b`
    ctime_ns: int = 0               # changes with any write, and `touch -d`/`cp -p`/`rsync -t` cannot set it back


def _shown(name: str) -> str:
    return name if name.isprintable() else ascii(name)


def _bad_name(name: str) -> str | None:
    if not name.isprintable():
        return "its name has control characters"
    try:
        name.encode()
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    return None


# ---------------------------------------------------------------- git, read-only

def _git(work: Path, *args: str, config: Sequence[str] = ()) -> tuple[int, bytes, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env.update(gitsource.GIT_ENV, GIT_OPTIONAL_LOCKS="0")
    import subprocess

    p = subprocess.run(["git", "--no-optional-locks", "-c", "core.fsmonitor=false", *config,
                        f"--git-dir={work / '.git'}", f"--work-tree={work}", *args],
                       cwd=work, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace").strip()


def _no_filters(work: Path) -> list[str]:
    """`-c` options that switch off every content filter driver the install's own git configuration names (the
    checkout's and its submodules' config files, with what they include): `git status` runs a driver's clean
    command on a file whose stat changed, so an install could otherwise make the import run a program. This
    machine's own drivers (global, system: git-lfs) stay; reading configuration runs nothing. A file a disabled
    driver would have changed shows as changed, and the import refuses it by name."""
    names: set[str] = set()
    files = [None, *(p for p in (work / ".git" / "modules").rglob("config") if p.is_file() and not p.is_symlink())]
    for f in files:
        where = ("--includes", "--file", str(f)) if f is not None else ("--includes", "--local")
        _, out, _ = _git(work, "config", *where, "--get-regexp", r"^filter\..*\.(clean|smudge|process|required)$")
        for line in out.decode(errors="replace").splitlines():
            key = line.split(" ", 1)[0]
            names.add(key[len("filter."):key.rfind(".")])
    return [a for n in sorted(names) for a in ("-c", f"filter.{n}.clean=", "-c", f"filter.{n}.smudge=",
                                                "-c", f"filter.{n}.process=", "-c", f"filter.{n}.required=false")]


def _is_bytecode(path: str) -> bool:
    return "__pycache__" in path.split("/") or path.endswith((".pyc", ".pyo"))


def git_state(work: Path) -> GitState:
    """HEAD, the remote URL and what differs from HEAD in the checkout at `work` (whose .git is a real folder)."""
    rc, out, err = _git(work, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if rc:
        raise ComfyverError(f"no commit checked out ({err or 'git rev-parse HEAD failed'})")
    rev = out.decode().strip()
    _, out, _ = _git(work, "remote")
    remotes = out.decode(errors="replace").split()
    remote = "origin" if "origin" in remotes else remotes[0] if len(remotes) == 1 else None
    url = None
    if remote:
        _, out, _ = _git(work, "config", "--get", f"remote.{remote}.url")  # as configured: no insteadOf applied
        url = out.decode(errors="replace").strip() or None
    rc, out, err = _git(work, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none",
                        config=_no_filters(work))
    if rc:
        raise ComfyverError(f"git status failed: {err.splitlines()[-1] if err else rc}")
    changed: list[str] = []
    untracked: list[str] = []
    recs = out.split(b"\0")
    i = 0
    while i < len(recs):
        rec = recs[i].decode(errors="surrogateescape")
        i += 1
        if len(rec) < 4:
            continue
        xy, path = rec[:2], rec[3:]
        if xy[0] in "RC":
            i += 1  # a rename's source path follows
        if _is_bytecode(path):
            continue
        (untracked if xy == "??" else changed).append(path)
    _, out, _ = _git(work, "for-each-ref", "--count=1", "--contains", rev, "--format=%(refname)", "refs/remotes", "refs/tags")
    on_remote = bool(out.strip())
    _, out, _ = _git(work, "ls-files", "--stage", "-z")
    return GitState(rev, url, changed, untracked, on_remote, any(r.startswith(b"160000 ") for r in out.split(b"\0")))


def _borrowed_objects(work: Path, root: Path) -> str | None:
    """Why git must not run in the checkout at `work` (its .git and each submodule's under .git/modules): git would
    read outside DIR (`root`) through a `commondir` file, an `objects` folder that is a link, or an
    `objects/info/alternates` entry (followed as git does, alternates of alternates included) naming a store
    outside DIR; a quoted entry is refused unread. None when git may run."""
    fix = ("not read, git is not run in it; make the checkout self-contained (`git repack -a -d`, then delete "
           "objects/info/alternates) and import again")
    git_dirs = [work / ".git"]
    if _lstat(work / ".git" / "modules") is not None:
        git_dirs += [p.parent for p in (work / ".git" / "modules").rglob("HEAD") if p.is_file() and not p.is_symlink()]
    for g in git_dirs:
        shown = os.path.relpath(g, work)
        if _lstat(g / "commondir") is not None:
            return f"{shown}/commondir makes git read another repository: {fix}"
        st = _lstat(g / "objects")
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return f"{shown}/objects is not a folder (a link?): {fix}"
        stores: list[str] = [str(g / "objects")]
        seen: set[str] = set()
        while stores:
            store = stores.pop()
            if store in seen:
                continue
            if len(seen) >= 16:
                return f"{shown}: alternates lead through more than 16 object stores: {fix}"
            seen.add(store)
            f = Path(store) / "info" / "alternates"
            if _lstat(f) is None:
                continue
            try:
                lines = _read_small(f, 1 << 16).decode(errors="replace").splitlines()
            except OSError as exc:
                return f"{_shown(os.path.relpath(f, work))} cannot be read ({exc}): {fix}"
            for line in (x.strip() for x in lines):
                if not line or line.startswith("#"):
                    continue
                if line.startswith('"'):
                    return f"{_shown(os.path.relpath(f, work))} has a quoted entry: {fix}"
                other = os.path.realpath(os.path.join(store, line))  # relative to the objects folder; links resolved
                if not _within(other, root):
                    return (f"its git objects are borrowed from {_shown(other)} "
                            f"({_shown(os.path.relpath(f, work))}), outside DIR: {fix}")
                stores.append(other)
    return None


def _git_problems(state: GitState) -> list[str]:
    out = []
    for what, paths in (("changed", state.changed), ("untracked", state.untracked)):
        if paths:
            shown = ", ".join(_shown(p) for p in paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")
            out.append(f"{len(paths)} {what} file(s): {shown}")
    if not state.on_remote:
        out.append(f"commit {state.rev[:12]} is on no remote branch or tag this checkout knows (a local commit: push it)")
    return out


def _usable_url(url: str | None) -> str | None:
    """The remote URL as a fetchable git URL: scp-style `git@host:o/r` as `ssh://git@host/o/r`; None if unusable."""
    if not url:
        return None
    m = re.fullmatch(r"([\w.-]+)@([\w.-]+):(?!/)(.+)", url)
    if m:
        url = f"ssh://{m.group(1)}@{m.group(2)}/{m.group(3)}"
    try:
        return gitsource.check_url(url, "remote")
    except ComfyverError:
        return None


# ---------------------------------------------------------------- small safe reads

def _read_small(path: Path, limit: int = 1 << 20) -> bytes:
    """A regular file of at most `limit` bytes, never through a link at its last component (a larger one is an
    OSError: never read in part)."""
    fd = os.open(path, _OPEN_FILE)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise OSError(f"{path.name} is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- the core and the custom nodes

def _core(root: Path, problems: list[Problem], comfyui_url: str | None, model_dirs: Sequence[str] = (),
          comfyui_ref: str | None = None) -> tuple[Core, set[str]]:
    """The core, and the paths under custom_nodes/ and models/ its git tracks (the core's own files there).
    `model_dirs`: DIR-relative folders extra_model_paths.yaml reads as models (their untracked files are no change).
    `comfyui_ref`: the core of a DIR that holds none (a Comfy Desktop base path: ComfyUI lives in the app)."""
    st = _lstat(root / ".git")
    if comfyui_ref is not None:
        if st is not None or _lstat(root / "comfyui_version.py") is not None:
            problems.append(Problem("ComfyUI", "DIR holds its own ComfyUI (a git checkout or comfyui_version.py): "
                                               "--comfyui-ref is only for a folder without one; leave it out"))
        return Core("--comfyui-ref", comfyui_ref, comfyui_url, None), set()
    if st is not None and stat.S_ISDIR(st.st_mode) and (why := _borrowed_objects(root, root)):
        problems.append(Problem("ComfyUI", why))
        return Core("git", "0" * 40, comfyui_url, None), set()
    if st is not None and stat.S_ISDIR(st.st_mode):
        try:
            state = git_state(root)
        except ComfyverError as exc:
            problems.append(Problem("ComfyUI", exc.message))
            return Core("git", "0" * 40, comfyui_url, None), set()
        if model_dirs:
            state = dataclasses.replace(state, untracked=[p for p in state.untracked if not any(
                p.startswith(d.rstrip("/") + "/") for d in model_dirs)])
        problems += [Problem("ComfyUI", p) for p in _git_problems(state)]
        url = comfyui_url or _usable_url(state.url)
        if url is None:
            why = (f"its remote URL {state.url!r} is not a git URL comfyver can fetch" if state.url
                   else "its checkout has no remote to fetch it from")
            problems.append(Problem("ComfyUI", why + "; give --comfyui-url URL"))
        _, out, _ = _git(root, "ls-files", "-z", "--", "custom_nodes", "models")
        return Core("git", state.rev, url, None), {p.decode(errors="surrogateescape") for p in out.split(b"\0") if p}
    if st is not None:
        problems.append(Problem("ComfyUI", ".git is not a folder (a worktree, a submodule or a link): not followed; "
                                           "import the main checkout"))
        return Core("git", "0" * 40, comfyui_url, None), set()
    try:
        m = VERSION_RE.search(_read_small(root / "comfyui_version.py").decode(errors="replace"))
    except FileNotFoundError:
        m = None
        problems.append(Problem("ComfyUI", "neither a git checkout nor a comfyui_version.py: is this a ComfyUI folder? "
                                           "(a Comfy Desktop base path holds no ComfyUI: name the Desktop's ComfyUI "
                                           "release with --comfyui-ref vX.Y.Z)"))
    except OSError as exc:
        m = None
        problems.append(Problem("ComfyUI", f"comfyui_version.py cannot be read ({exc.strerror or exc})"))
    else:
        if not m:
            problems.append(Problem("ComfyUI", "comfyui_version.py names no __version__"))
    version = m.group(1) if m else "0"
    return Core("comfyui_version.py", f"v{version}", comfyui_url, version), set()


def _registry_spec(pack: Path) -> str | None:
    """`<id>@<version>` for a Comfy Registry install (`.tracking`, or a pyproject with [tool.comfy]), else None."""
    tracking = _lstat(pack / ".tracking") is not None
    try:
        data: dict[str, Any] = tomllib.loads(_read_small(pack / "pyproject.toml").decode())
    except FileNotFoundError:
        data = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        if tracking:
            raise ComfyverError(f"a registry install whose pyproject.toml cannot be read ({exc})") from None
        return None
    tool, proj = data.get("tool"), data.get("project")
    if not tracking and not (isinstance(tool, dict) and isinstance(tool.get("comfy"), dict)):
        return None
    proj = proj if isinstance(proj, dict) else {}
    nid, ver = proj.get("name"), proj.get("version")
    if not isinstance(nid, str) or not isinstance(ver, str) or not re.fullmatch(r"[\w.-]+", nid + ver):
        raise ComfyverError("a Comfy Registry install without a usable [project] name and version in pyproject.toml")
    return f"{nid.lower()}@{ver}"


def _local(pack: Path, item: str, why: list[str], problems: list[Problem]) -> NodeFound | None:
    """--allow-dirty: the pack as it is on disk (sources/localnode.py), if its folder name can name a node."""
    if not lockfile.NODE_NAME_RE.match(pack.name):
        problems.append(Problem(item, f"{'; '.join(why)}; with --allow-dirty its folder name would name the node, "
                                      "and it is not one ([A-Za-z0-9][A-Za-z0-9._-]*): rename the folder"))
        return None
    bad = localnode.scan(pack)[1]  # all of them now, before any model is hashed
    problems += [Problem(item, f"--allow-dirty: {b}") for b in bad]
    return None if bad else NodeFound(pack.name, str(pack), "local", why_local="; ".join(why))


def _unpinned(pack: Path, item: str, why: str, problems: list[Problem], allow_dirty: bool,
              short: str | None = None) -> NodeFound | None:
    """A pack no source pins: with --allow-dirty taken as it is on disk (`short`, else `why`, in its note), else `why`
    is its problem."""
    if allow_dirty:
        return _local(pack, item, [short or why], problems)
    problems.append(Problem(item, why))
    return None


def _node(pack: Path, problems: list[Problem], allow_dirty: bool = False) -> NodeFound | None:
    item = f"custom_nodes/{_shown(pack.name)}"
    st = _lstat(pack / ".git")
    try:
        if st is not None and stat.S_ISDIR(st.st_mode) and (why := _borrowed_objects(pack, pack.parent.parent)):
            return _unpinned(pack, item, why, problems, allow_dirty, why.split(":")[0])  # git is not run in it
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                state = git_state(pack)
            except ComfyverError as exc:  # no commit checked out
                return _unpinned(pack, item, exc.message, problems, allow_dirty)
            bad = _git_problems(state)
            url = _usable_url(state.url)
            if url is None:
                bad.append(f"its remote URL {state.url!r} is not a git URL comfyver can fetch" if state.url
                           else "its checkout has no remote to fetch it from")
            if bad and allow_dirty:
                return _local(pack, item, bad, problems)
            problems += [Problem(item, p) for p in bad]
            return NodeFound(pack.name, f"{url}@{state.rev}", "git", state.submodules)
        if st is not None:
            return _unpinned(pack, item, ".git is not a folder (a worktree, a submodule or a link): not followed",
                             problems, allow_dirty)
        spec = _registry_spec(pack)
    except PermissionError as exc:
        problems.append(Problem(item, f"cannot be read ({exc.strerror})"))
        return None
    except ComfyverError as exc:
        problems.append(Problem(item, exc.message))
        return None
    if spec is None:
        return _unpinned(pack, item, "neither a git checkout nor a Comfy Registry install: nothing to pin it by",
                         problems, allow_dirty)
    return NodeFound(pack.name, spec, "registry")


def _nodes(root: Path, inst: Install, problems: list[Problem], core_files: set[str], allow_dirty: bool = False) -> None:
    base = root / "custom_nodes"
    st = _lstat(base)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        problems.append(Problem("custom_nodes", "not a folder (a link?): not followed"))
        return
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as exc:
        problems.append(Problem("custom_nodes", f"cannot be read ({exc.strerror})"))
        return
    for e in entries:
        item = f"custom_nodes/{_shown(e.name)}"
        if e.name == "__pycache__" or f"custom_nodes/{e.name}" in core_files:
            continue
        if bad := _bad_name(e.name):
            problems.append(Problem(item, f"{bad}: refused"))
        elif e.is_symlink():
            problems.append(Problem(item, f"a symbolic link (to {_shown(os.readlink(e.path))}): not followed"))
        elif e.name == ".disabled" and e.is_dir(follow_symlinks=False):  # ComfyUI-Manager's folder of disabled packs
            try:
                inst.disabled += sorted(f".disabled/{_shown(x.name)}" for x in os.scandir(e.path))
            except OSError:
                inst.disabled.append(".disabled")
        elif e.name.endswith(".disabled"):
            inst.disabled.append(_shown(e.name))
        elif not e.is_dir(follow_symlinks=False):
            if e.is_file(follow_symlinks=False) and e.name.endswith(".py"):
                inst.left_out.append(f"{item}: a single-file node (no source to pin; publish it in a git repository)")
            elif not e.name.endswith(".example"):
                inst.left_out.append(f"{item}: not a node folder")
        elif e.name.startswith("."):
            inst.left_out.append(f"{item}: a hidden folder")
        elif (node := _node(Path(e.path), problems, allow_dirty)) is not None:
            inst.nodes.append(node)


# ---------------------------------------------------------------- models

@contextmanager
def _opendir(name: str, dir_fd: int | None) -> Iterator[int]:
    fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _walk(fd: int, label: str, problems: list[Problem], left_out: list[str], skip: Callable[[list[str]], bool],
          rel: list[str] | None = None) -> Iterator[tuple[list[str], os.stat_result]]:
    """Each regular file under the folder open at `fd` (its parts, its lstat), walked by descriptor: a link, a pipe,
    an unreadable folder or a name with control characters is a problem named `<label>/<parts>`; hidden names are
    left out; `skip(parts)` drops a path silently."""
    rel = rel or []
    for e in sorted(os.scandir(fd), key=lambda x: x.name):
        parts = [*rel, e.name]
        shown = label + "/" + "/".join(_shown(p) for p in parts)
        if skip(parts):
            continue
        if bad := _bad_name(e.name):
            problems.append(Problem(shown, f"{bad}: refused"))
            continue
        if e.name.startswith("."):
            left_out.append(f"{shown}: hidden")
            continue
        est = e.stat(follow_symlinks=False)
        if stat.S_ISLNK(est.st_mode):
            problems.append(Problem(shown, f"a symbolic link (to {_shown(os.readlink(e.name, dir_fd=fd))}): "
                                           "not followed"))
        elif stat.S_ISDIR(est.st_mode):
            try:
                with _opendir(e.name, fd) as sub:
                    yield from _walk(sub, label, problems, left_out, skip, parts)
            except OSError as exc:
                problems.append(Problem(shown, f"cannot be read ({exc.strerror})"))
        elif not stat.S_ISREG(est.st_mode):
            problems.append(Problem(shown, "not a regular file (a pipe, socket or device): refused"))
        else:
            yield parts, est


def _scan_models(root: Path, problems: list[Problem], left_out: list[str], core_files: set[str],
                 from_version_file: bool) -> list[_Seen]:
    """Every regular file under models/<folder>/, walked by descriptor (a link is never followed)."""
    base = root / "models"
    st = _lstat(base)
    if st is None:
        return []
    if not stat.S_ISDIR(st.st_mode):
        problems.append(Problem("models", "not a folder (a link?): not followed"))
        return []
    seen: list[_Seen] = []

    def skip(parts: list[str]) -> bool:
        return (f"models/{'/'.join(parts)}" in core_files
                or (from_version_file and PLACEHOLDER.fullmatch(parts[-1]) is not None))

    try:
        with _opendir(str(base), None) as fd:
            for parts, est in _walk(fd, "models", problems, left_out, skip):
                shown = "models/" + "/".join(_shown(p) for p in parts)
                if len(parts) == 1:
                    left_out.append(f"{shown}: not inside a model folder (models/<folder>/...)")
                elif from_version_file and parts[0] == "configs":
                    left_out.append(f"{shown}: models/configs/ holds ComfyUI's own files")
                else:
                    seen.append(_Seen("/".join(parts), str(base.joinpath(*parts)), est.st_size, est.st_mtime_ns,
                                      est.st_ino, est.st_dev, shown, est.st_ctime_ns))
    except OSError as exc:
        problems.append(Problem("models", f"cannot be read ({exc.strerror})"))
    return seen


# ---------------------------------------------------------------- extra_model_paths.yaml

@dataclass(frozen=True)
class _Entry:
    """One folder path of extra_model_paths.yaml, as ComfyUI's load_extra_path_config computes it."""
    entry: str                      # `<section>.<key>`
    folder: str                     # the key, legacy names mapped
    path: str                       # normalized full path
    absolute: bool                  # asked for: an absolute path in DIR's yaml, any path of a yaml given by the user
    is_default: bool
    yaml: str = "extra_model_paths.yaml"  # the file that names it (as problems and notes name it)


def _yaml_entries(root: Path, problems: list[Problem], given: Path | None = None) -> list[_Entry]:
    """The folders of DIR/extra_model_paths.yaml (`given`: of a yaml the user names, as ComfyUI's
    --extra-model-paths-config reads it), in the yaml's order (ComfyUI's rules: utils/extra_config.py: a relative
    path is the yaml's folder's)."""
    path = given or root / EXTRA_YAML
    item = _shown(str(given)) if given else EXTRA_YAML
    here = path.parent  # ComfyUI's yaml_dir
    if given is None and _lstat(path) is None:
        return []
    try:
        config = yaml.safe_load(_read_small(path).decode())
    except OSError as exc:
        why = "a symbolic link: not followed" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        problems.append(Problem(item, why))
        return []
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(Problem(item, f"not valid YAML ({str(exc).splitlines()[0]})"))
        return []
    if config is None:
        return []
    if not isinstance(config, dict):
        problems.append(Problem(item, "not a mapping of sections (`comfyui: {base_path: ..., checkpoints: ...}`)"))
        return []
    out: list[_Entry] = []
    for section, conf in config.items():
        if conf is None:
            continue
        where = f"{item} {_shown(str(section))}"
        if not isinstance(conf, dict):
            problems.append(Problem(where, "not a mapping of folder names to paths"))
            continue
        if bad := _bad_name(str(section)):
            problems.append(Problem(where, f"the section: {bad}"))
            continue
        conf = dict(conf)
        base = conf.pop("base_path", None)
        base_abs = False
        if base:
            base = os.path.expandvars(os.path.expanduser(str(base)))
            if bad := _bad_path(base):
                problems.append(Problem(f"{where}.base_path", bad))
                continue
            base_abs = os.path.isabs(base) or given is not None
            if not os.path.isabs(base):
                base = os.path.abspath(os.path.join(here, base))
        is_default = bool(conf.pop("is_default", False))
        for key, value in conf.items():
            at = f"{where}.{_shown(str(key))}"
            if not isinstance(value, str):
                problems.append(Problem(at, "not a path (ComfyUI reads a string, one path a line)"))
                continue
            if not _FOLDER.fullmatch(str(key)):
                problems.append(Problem(at, "not a model folder name (letters, digits, _ . -; no path)"))
                continue
            for line in value.split("\n"):
                if not line:
                    continue
                if bad := _bad_path(line):
                    problems.append(Problem(at, bad))
                    continue
                if base:
                    full, absolute = os.path.join(base, line), base_abs or os.path.isabs(line)
                else:
                    absolute = os.path.isabs(line) or given is not None
                    full = line if os.path.isabs(line) else os.path.abspath(os.path.join(here, line))
                out.append(_Entry(f"{section}.{key}", nodescan.LEGACY_FOLDERS.get(str(key), str(key)),
                                  os.path.normpath(full), absolute, is_default, item))
    return out


_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _bad_path(path: str) -> str | None:
    """Why a path of the yaml (expanded) cannot be read: a NUL byte, control characters, a secret it expanded."""
    if "\0" in path:
        return "the path has a NUL byte"
    if not path.isprintable():
        return f"the path {_shown(path)} has control characters"
    if web.redact(path) != path:
        return "the path expands an environment variable that holds a secret: name the folder itself"
    return None


def _within(path: str, folder: Path) -> bool:
    return path == str(folder) or path.startswith(str(folder) + os.sep)


def _open_inside(root: Path, rel: str) -> tuple[int | None, str | None]:
    """The folder DIR/`rel` opened one part at a time from DIR, else None and why (`!`: a problem): a link on the
    way is never followed."""
    fd = os.open(str(root), _OPEN_DIR)
    try:
        for part in Path(rel).parts:
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None, "does not exist"
            if stat.S_ISLNK(st.st_mode):
                return None, f"!{_shown(part)} on its way is a symbolic link: not followed"
            if not stat.S_ISDIR(st.st_mode):
                return None, "not a folder"
            sub = os.open(part, _OPEN_DIR, dir_fd=fd)
            os.close(fd)
            fd = sub
        out, fd = fd, -1
        return out, None
    finally:
        if fd >= 0:
            os.close(fd)


def _open_extra(root: Path, e: _Entry) -> tuple[int | None, str, str | None]:
    """The folder of `e` opened (fd), its label, else None and why it is not read (a str starting with '!' is a
    problem). Inside DIR: opened part by part from DIR, a link on the way refused; outside: only an absolute path
    the yaml names (the path itself resolved as DIR is), never a relative one that climbs out."""
    if _within(e.path, root):
        label = os.path.relpath(e.path, root)
        if _within(e.path, root / "models"):
            return None, label, "already read under models/"
        fd, why = _open_inside(root, label)
        return fd, label, why
    if not e.absolute:
        return None, e.path, ("!leads outside the install (a relative path); name the folder by an absolute path in "
                              "the yaml to read it")
    real = os.path.realpath(e.path)
    if _within(real, root / "models"):
        return None, e.path, "already read under models/"
    try:
        return os.open(real, _OPEN_DIR), e.path, None
    except FileNotFoundError:
        return None, e.path, "does not exist"
    except NotADirectoryError:
        return None, e.path, "not a folder"


def _scan_extra(root: Path, entries: list[_Entry], problems: list[Problem], left_out: list[str]) -> tuple[
        list[ExtraFolder], list[tuple[bool, list[_Seen]]]]:
    """The folders of extra_model_paths.yaml and the files read in each (with its is_default)."""
    folders: list[ExtraFolder] = []
    found: list[tuple[bool, list[_Seen]]] = []
    done: dict[tuple[str, str], str] = {}  # (folder, path) -> the entry that read it
    for e in entries:
        outside = not _within(e.path, root)
        if e.folder == "custom_nodes":
            folders.append(ExtraFolder(e.entry, e.folder, e.path, outside, 0, "packs outside custom_nodes/ are not read",
                                       e.yaml))
            continue
        if (e.folder, e.path) in done:
            folders.append(ExtraFolder(e.entry, e.folder, e.path, outside, 0, f"already read as {done[e.folder, e.path]}",
                                       e.yaml))
            continue
        try:
            fd, label, why = _open_extra(root, e)
        except OSError as exc:
            fd, label, why = None, e.path, f"!cannot be read ({exc.strerror or exc})"
        if fd is None:
            why = why or "not read"
            if why.startswith("!"):
                why = why[1:]
                problems.append(Problem(f"{e.yaml} {e.entry}: {_shown(label)}", why))
            folders.append(ExtraFolder(e.entry, e.folder, e.path, outside, 0, why, e.yaml))
            continue
        done[e.folder, e.path] = e.entry
        base = Path(os.path.realpath(e.path)) if outside else Path(e.path)
        seen: list[_Seen] = []
        try:
            for parts, est in _walk(fd, _shown(label), problems, left_out,
                                    lambda parts: PLACEHOLDER.fullmatch(parts[-1]) is not None):
                seen.append(_Seen(f"{e.folder}/{'/'.join(parts)}", str(base.joinpath(*parts)), est.st_size,
                                  est.st_mtime_ns, est.st_ino, est.st_dev,
                                  _shown(label) + "/" + "/".join(_shown(p) for p in parts), est.st_ctime_ns))
        except OSError as exc:
            problems.append(Problem(_shown(label), f"cannot be read ({exc.strerror})"))
        finally:
            os.close(fd)
        folders.append(ExtraFolder(e.entry, e.folder, str(base), outside, len(seen), yaml=e.yaml))
        found.append((e.is_default, seen))
    return folders, found


def _by_search_order(models: list[_Seen], extra: list[tuple[bool, list[_Seen]]], left_out: list[str]) -> list[_Seen]:
    """One file per key, the one ComfyUI finds first: the is_default folders (the last one added first), then
    models/, then the others in the yaml's order; each file it hides is left out by name."""
    order = [s for d, s in reversed(extra) if d] + [models] + [s for d, s in extra if not d]
    kept: dict[str, _Seen] = {}
    for f in (f for group in order for f in group):
        if f.key in kept:
            left_out.append(f"{f.item}: hidden by {kept[f.key].item} (ComfyUI finds that one first as {f.key})")
        else:
            kept[f.key] = f
    return list(kept.values())


class _StatCache:
    """sha256 by (path, size, mtime_ns, inode, device, ctime_ns), kept in the cache folder; written atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("schema") == 1 and isinstance(data.get("entries"), dict):
                self.entries = data["entries"]
        except (OSError, ValueError):
            pass

    def get(self, f: _Seen) -> str | None:
        e = self.entries.get(f.path)
        return e[5] if isinstance(e, list) and e[:5] == [f.size, f.mtime_ns, f.ino, f.dev, f.ctime_ns] else None

    def save(self, fresh: dict[str, list[Any]], under: tuple[str, ...]) -> None:
        with FileLock(str(self.path) + ".lock"):
            try:  # another import may have written meanwhile: keep its entries for other folders
                data = json.loads(self.path.read_text())
                entries: dict[str, list[Any]] = data["entries"] if data.get("schema") == 1 else {}
            except (OSError, ValueError, KeyError, AttributeError):
                entries = {}
            entries = {p: e for p, e in entries.items() if not p.startswith(under)}  # the folders read now
            entries.update(fresh)
            fsutil.atomic_write_json(self.path, {"schema": 1, "entries": entries})


def _open_seen(f: _Seen) -> int:
    """The file the scan saw, opened read-only: not through a link, and the same inode, or an error."""
    try:
        fd = os.open(f.path, _OPEN_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ComfyverError("replaced by a symbolic link while importing: not followed") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (f.dev, f.ino):
        os.close(fd)
        raise ComfyverError("replaced while importing (not the file the scan saw): refused")
    return fd


def _hash_one(f: _Seen, advance: Callable[[int], None]) -> str:
    fd = _open_seen(f)
    try:
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        read = 0
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
                read += n
                advance(n)
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != (f.size, f.mtime_ns, f.ctime_ns):
            raise ComfyverError("changed while it was hashed: import again when nothing writes to it")
        if read != f.size:  # /proc and the like: a size that is not what a read gives
            raise ComfyverError(f"gave {read} bytes for a size of {f.size}: not a model file")
        return h.hexdigest()
    finally:
        os.close(fd)


def hash_models(root: Path, seen: list[_Seen], problems: list[Problem], *, jobs: int, progress: bool,
                folders: Sequence[str] = ()) -> tuple[list[ModelFound], HashStats]:
    """sha256 of each file (the stat cache first); `folders`: the folders read besides models/ (their cache entries
    are replaced by this run's)."""
    t0 = time.monotonic()
    cache = _StatCache(project.cache_dir() / CACHE_NAME)
    stats = HashStats(files=len(seen))
    found: dict[str, str] = {}
    todo: list[_Seen] = []
    for f in seen:
        if (sha := cache.get(f)) is not None:
            found[f.key] = sha
            stats.cached += 1
        else:
            todo.append(f)
    bar = None
    advance: Callable[[int], None] = lambda n: None  # noqa: E731
    if todo and progress and sys.stderr.isatty():
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(TextColumn(f"hashing {len(todo)} model(s)"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn(), console=ui.console(stderr=True), transient=True)
        task = bar.add_task("", total=sum(f.size for f in todo))
        bar.start()
        advance = lambda n: bar.update(task, advance=n)  # noqa: E731
    started = time.time_ns()
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [(f, pool.submit(_hash_one, f, advance)) for f in todo]
            for f, fut in futures:
                try:
                    found[f.key] = fut.result()
                    stats.hashed += 1
                    stats.bytes_hashed += f.size
                except ComfyverError as exc:
                    problems.append(Problem(f.item, exc.message))
                except OSError as exc:
                    problems.append(Problem(f.item, f"cannot be read ({exc.strerror or exc})"))
    finally:
        if bar:
            bar.stop()
    # a file written in the last 2 s may change again within the same mtime tick: not remembered (hashed next time)
    fresh = {f.path: [f.size, f.mtime_ns, f.ino, f.dev, f.ctime_ns, found[f.key]] for f in seen
             if f.key in found and f.mtime_ns < started - 2_000_000_000}
    cache.save(fresh, tuple(str(d).rstrip(os.sep) + os.sep for d in (root / "models", *folders)))
    stats.seconds = round(time.monotonic() - t0, 3)
    return [ModelFound(f.key, f.path, f.size, found[f.key]) for f in seen if f.key in found], stats


# ---------------------------------------------------------------- workflows

def _scan_workflows(root: Path, left_out: list[str]) -> list[_Seen]:
    """user/default/workflows/*.json, regular files only (anything else there is left out by name)."""
    try:
        fd, why = _open_inside(root, WORKFLOWS)
    except OSError as exc:
        fd, why = None, f"cannot be read ({exc.strerror or exc})"
    if fd is None:
        if why != "does not exist":
            left_out.append(f"{WORKFLOWS}: {(why or '').lstrip('!')}")
        return []
    out: list[_Seen] = []
    try:
        for e in sorted(os.scandir(fd), key=lambda x: x.name):
            shown = f"{WORKFLOWS}/{_shown(e.name)}"
            est = e.stat(follow_symlinks=False)
            why = (_bad_name(e.name) or ("a symbolic link: not followed" if stat.S_ISLNK(est.st_mode) else None)
                   or ("a subfolder: not offered" if stat.S_ISDIR(est.st_mode) else None)
                   or (None if stat.S_ISREG(est.st_mode) else "not a regular file"))
            if why:
                left_out.append(f"{shown}: {why}")
            elif e.name.endswith(".json") and not e.name.startswith("."):
                out.append(_Seen(e.name, str(root / WORKFLOWS / e.name), est.st_size, est.st_mtime_ns, est.st_ino,
                                 est.st_dev, shown))
    finally:
        os.close(fd)
    return out


def read_workflow(w: _Seen) -> bytes:
    """A workflow the scan offered: the very file it saw (not through a link, same inode), whole."""
    fd = _open_seen(w)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(WORKFLOW_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > WORKFLOW_LIMIT:
        raise ComfyverError(f"{w.item}: larger than {WORKFLOW_LIMIT >> 20} MiB: not a workflow")
    return data


# ---------------------------------------------------------------- the whole install, then the plan

def _name_clashes(inst: Install, copy_workflows: bool) -> list[Problem]:
    """Two packs the version would name alike (forks of one repository name), and, when workflows are copied, two
    workflow files saved under one name: found before any model is hashed."""
    out: list[Problem] = []
    by_name: dict[str, list[NodeFound]] = {}
    for n in inst.nodes:
        try:
            name = n.folder if n.kind == "local" else resolve.parse_node_spec(n.spec, submodules=n.submodules)[0]
        except ComfyverError:
            continue  # its own problem is already named
        by_name.setdefault(name, []).append(n)
    for name, found in sorted(by_name.items()):
        folders = [n.folder for n in found]
        if len({n.spec for n in found}) > 1:  # one pack twice at one revision is one node: no clash
            shown = ", ".join(f"custom_nodes/{_shown(f)}" for f in folders)
            out.append(Problem(shown, f"{len(folders)} packs would all be node {name!r} of the version (forks of one "
                                      "repository name); keep one, and move the others to custom_nodes/.disabled"))
    if copy_workflows:
        saved: dict[str, list[str]] = {}
        for w in inst.workflows:
            saved.setdefault(importers.saved_workflow_name(w.key), []).append(w.item)
        out += [Problem(", ".join(items), f"would all be saved as {rel} of the version; rename all but one")
                for rel, items in sorted(saved.items()) if len(items) > 1]
    return out


def read(directory: str | os.PathLike[str], *, comfyui_url: str | None = None, jobs: int = resolve.DEFAULT_JOBS,
         progress: bool = True, copy_workflows: bool = False, comfyui_ref: str | None = None,
         allow_dirty: bool = False, extra_configs: Sequence[str] = ()) -> Install:
    """Read the install at `directory` (nothing in it is written); raise InstallProblems naming every item that
    cannot be pinned (`copy_workflows`: also workflows that would be saved under one name). Models are hashed only
    once the rest of the install is known to import."""
    root = Path(directory).resolve()  # DIR itself may be a link the user names; nothing inside it is followed
    if not root.is_dir():
        raise UsageError(f"--from-install {directory}: not a folder", hint="give the ComfyUI folder (it holds main.py)")
    problems: list[Problem] = []
    entries = _yaml_entries(root, problems)  # then each --extra-model-paths-config, in order, as ComfyUI's main.py
    for config in extra_configs:
        entries += _yaml_entries(root, problems, Path(os.path.realpath(config)))  # the user names it: links followed
    core, core_files = _core(root, problems, comfyui_url,
                             [os.path.relpath(e.path, root) for e in entries if _within(e.path, root) and e.path != str(root)],
                             comfyui_ref)
    inst = Install(root, core)
    _nodes(root, inst, problems, core_files, allow_dirty)
    seen = _scan_models(root, problems, inst.left_out, core_files, core.source != "git")
    inst.extra, extra = _scan_extra(root, entries, problems, inst.left_out)
    inst.workflows = _scan_workflows(root, inst.left_out)
    problems += _name_clashes(inst, copy_workflows)
    if problems:
        raise InstallProblems(root, problems)
    seen = _by_search_order(seen, extra, inst.left_out)
    inst.models, inst.stats = hash_models(root, seen, problems, jobs=jobs, progress=progress,
                                          folders=[x.path for x in inst.extra if x.note is None])
    if problems:
        raise InstallProblems(root, problems)
    return inst


def plan(inst: Install, comfyui_url: str, search: modelsearch.Search | None = None) -> importers.Plan:
    """The install as an import plan: the core at its rev (or release tag), each node at its rev or registry version,
    each model pinned by its sha256 and size at a public source whose file has that sha256 (`search`: Hugging Face
    and Civitai, sources/modelsearch.py), else at its local file:// path."""
    core: GitOriginal = {"type": "git", "url": inst.core.url or comfyui_url, "ref": inst.core.ref}
    source = str(inst.dir)
    pl = importers.Plan("install", core)
    if inst.core.source == "comfyui_version.py":
        pl.notes.append(f"ComfyUI is not a git checkout: comfyui_version.py says {inst.core.version}, locked as the "
                        f"release tag {inst.core.ref} (the files on disk were not compared with it)")
    elif inst.core.source == "--comfyui-ref":
        pl.notes.append(f"DIR holds no ComfyUI (a Comfy Desktop base path): ComfyUI locked at {inst.core.ref}, as "
                        "--comfyui-ref names it")
    for n in inst.nodes:
        if n.kind == "local":
            importers.add_node(pl, n.folder, {"type": "local", "path": n.spec}, source)
            pl.notes.append(f"custom_nodes/{n.folder}: recorded as it is on disk (--allow-dirty; {n.why_local}); its "
                            "archive is in this machine's comfyver cache: Nix and other machines cannot fetch it")
            continue
        name, original = resolve.parse_node_spec(n.spec, submodules=n.submodules)
        importers.add_node(pl, name, original, source)
    local = 0
    for i, m in enumerate(inst.models):
        src = Path(m.path).as_uri()
        if search is not None and i < modelsearch.MAX_MODELS:
            r = search.find(Path(m.key).name, m.sha256)
            if r.picked is not None and r.picked.hash_match:  # the very bytes: never a name-only match
                src = r.picked.source
                pl.notes.append(f"model {m.key}: the file with its sha256 is on {r.picked.service} ({r.picked.where}): "
                                f"{src}")
        local += src.startswith("file:")
        pl.models[m.key] = resolve.parse_model_source(src, m.sha256, m.size)
    if search is not None:
        search.flush()
        pl.notes += [f"model search: could not reach {svc} ({why}); models were not looked up there"
                     for svc, why in sorted(search.down.items())]
        if len(inst.models) > modelsearch.MAX_MODELS:
            pl.notes.append(f"model search: the first {modelsearch.MAX_MODELS} models were looked up, not the rest")
    if local:
        pl.notes.append(f"{local} model(s) recorded as local files of {source} (file:// with sha256 and size): "
                        "fetchable on this machine only; `comfyver add-model` gives one a public source")
    pl.notes += [f"{x.yaml} {x.entry}: {x.path}: " + (f"{x.files} model file(s) read" if x.note is None else
                 f"not read ({x.note})") for x in inst.extra]
    pl.notes += [f"disabled, left out: custom_nodes/{d}" for d in inst.disabled]
    pl.notes += [f"left out: {x}" for x in inst.left_out]
    return pl
