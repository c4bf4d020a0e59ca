"""Model placement `cached` (COMFY_MODELS=cached): the version's Hugging Face models come from the Hugging Face
cache RunPod fills on the host before the worker starts (docs/handler.md, Model placement).

Before ComfyUI starts, each Hugging Face model of the version's lock is looked for in the cache
(`COMFY_HF_CACHE`, default /runpod-volume/huggingface-cache/hub) at
`models--ORG--NAME/snapshots/<locked commit>/<path>`, then at the commits the repository's `refs/` name. Its
sha256 is checked against the lock once: a stat cache of verified files (size, mtime, inode, device -> sha256)
in the worker's state folder (`hfcache-verified.json`, written atomically) answers for an unchanged file on the
next start. The file is then linked as `<links>/<folder>/<name>` (the lock's key), the folder the images
without models link their volume blobs into ($COMFYVER_MODEL_LINKS, else `<state>/models`), which ComfyUI
reads through an extra_model_paths entry: ComfyUI lists it under the same name as a baked or volume model.

A model of a cached repository that is missing or whose bytes differ stops the worker with an error naming
the model, the paths looked at, the expected and found sha256, and what to do. Nothing is downloaded instead.
Models not on Hugging Face, and those of repositories the endpoint does not cache (RunPod caches one per
endpoint), must come another way: a blob of the volume's store (`MODELS_DIR/sha256/<hex>`) is linked when
there; a model found nowhere is named in the worker's log (jobs that use it fail with `missing_model`).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from comfyver.sources.cachedmodels import ENV_REPOS, HFModel, hf_models, repo_folder_name

from handler.settings import Settings

log = logging.getLogger("handler")
VERIFIED = "hfcache-verified.json"  # the stat cache of verified cached files, in the state folder
YAML = "extra_model_paths.cached.yaml"


class CachedModelError(RuntimeError):
    """The cached placement cannot be made: the worker does not start (its message says what to do)."""


@dataclass
class Placed:
    cached: dict[str, Path] = field(default_factory=dict)     # key -> the cache file it is linked to
    elsewhere: dict[str, str] = field(default_factory=dict)   # key -> where it comes from instead
    missing: list[str] = field(default_factory=list)          # keys found nowhere (not cached, not on the volume)
    links: Path | None = None
    yaml: Path | None = None


def links_dir(settings: Settings) -> Path:
    """Where the model names are linked: the images' $COMFYVER_MODEL_LINKS (already in their yaml), else
    `<state>/models`."""
    env = os.environ.get("COMFYVER_MODEL_LINKS")
    return Path(env) if env else settings.state_dir / "models"


def _read_lock(settings: Settings):
    from comfyver.base import lockfile, project
    from comfyver.base.errors import ComfyverError

    if settings.lock_file is not None:
        path = settings.lock_file
    elif settings.versions_root is not None and settings.version_id:
        path = project.lock_path(settings.versions_root, settings.version_id)
    else:
        raise CachedModelError("COMFY_MODELS=cached needs the version's lock to know its models: set COMFYVER_LOCK "
                               "to its version.json (the images set it), or COMFYVER_ROOT and COMFYVER_VERSION_ID")
    try:
        lock = lockfile.read(path)
    except (ComfyverError, OSError) as exc:
        raise CachedModelError(f"COMFY_MODELS=cached: cannot read the version's lock {path}: {exc}") from None
    if settings.lock_digest and lockfile.lock_digest(lock) != settings.lock_digest:
        raise CachedModelError(f"COMFY_MODELS=cached: the lock {path} (digest {lockfile.lock_digest(lock)[:12]}...) "
                               f"is not the one this worker runs (COMFYVER_LOCK_DIGEST {settings.lock_digest[:12]}...)"
                               "; point COMFYVER_LOCK at the version.json the image was built from")
    return lock


def candidates(root: Path, m: HFModel) -> list[Path]:
    """Where `m` may be in the cache: the snapshot of its locked commit, then those `refs/` names (a lock that
    names a branch, or a cache filled at the branch's newer commit: the sha256 decides)."""
    repo = root / repo_folder_name(m.repo)
    rel = PurePosixPath(m.path)
    if rel.is_absolute() or ".." in rel.parts:
        return []
    revs = [m.rev]
    refs = repo / "refs"
    if refs.is_dir():
        names = sorted((p for p in refs.rglob("*") if p.is_file()), key=lambda p: (p.name != "main", str(p)))
        for ref in names:
            try:
                commit = ref.read_text().strip()
            except (OSError, ValueError):  # unreadable, or not text (UnicodeDecodeError): not a ref
                continue
            revs += [commit, ref.relative_to(refs).as_posix()]  # a snapshot folder named by the ref itself too
    seen: list[Path] = []
    for rev in revs:
        if rev and "/" not in rev and rev not in ("..", "."):
            p = repo / "snapshots" / rev / rel
            if p not in seen:
                seen.append(p)
    return seen


def locate(root: Path, m: HFModel, cache, vid: str | None = None) -> Path:
    """The cache file holding `m`'s bytes (sha256 checked through `cache`); else a CachedModelError."""
    from comfyver.sources import modelstore

    looked, wrong = [], []
    for path in candidates(root, m):
        looked.append(str(path))
        if not path.is_file():
            continue
        real = Path(os.path.realpath(path))  # the file itself (a snapshot entry links to its blob): it is what is
        try:                                 # checked and linked, so a link retargeted later changes nothing
            digest = modelstore.file_sha256(real, cache)
        except OSError as exc:
            wrong.append(f"{path} cannot be read ({exc.strerror})")
            continue
        if digest == m.sha256:
            return real
        wrong.append(f"{path} has sha256 {digest}")
    what = (f"model {m.key} (Hugging Face {m.repo}@{m.rev[:12]}, file {m.path}, {m.size} bytes): expected sha256 "
            f"{m.sha256}; ")
    what += ("the cached file is corrupt or of another revision: " + "; ".join(wrong) if wrong
             else "it is not in the Hugging Face cache: looked at " + ", ".join(looked or [str(root)]))
    other = (f"`comfyver models sync {vid} --to runpod://<volume>` and COMFY_MODELS unset" if vid
             else "a network volume with COMFY_MODELS unset")
    raise CachedModelError(what + f". Fix the endpoint's cached model (RunPod console, Edit Endpoint > Model: {m.repo} "
                           f"at revision {m.rev}), or place the models another way ({other}, or the image with the "
                           "models baked in); nothing is downloaded instead")


def _link(links: Path, key: str, target: Path) -> None:
    link = links / key
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise CachedModelError(f"model {key}: {link} is a file, not a link; remove it so the cached model can be "
                               "linked there")
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _drop_stale_links(links: Path, keys: set[str]) -> None:
    """Links an earlier lock left (a model this version does not have must not be listed to ComfyUI)."""
    if not links.is_dir():
        return
    for p in links.rglob("*"):
        if p.is_symlink() and p.relative_to(links).as_posix() not in keys:
            p.unlink(missing_ok=True)


def _elsewhere(settings: Settings, key: str, sha256: str, links: Path) -> str | None:
    """Where a model not taken from the cache comes from: a volume blob (linked now), or a file ComfyUI already
    finds (baked, a link the image made); None when it is nowhere."""
    if settings.models_dir is not None and (blob := settings.models_dir / "sha256" / sha256).is_file():
        _link(links, key, blob)
        return f"volume {blob}"
    for base in (links, settings.models_dir, settings.comfy_home / "models" if settings.comfy_home else None):
        if base is not None and (base / key).exists():
            return str(base / key)
    return None


def place(settings: Settings) -> Placed:
    """Link the version's cached models (verified) before ComfyUI starts; a CachedModelError stops the worker."""
    from comfyver.sources import modelstore

    lock = _read_lock(settings)
    hf, others = hf_models(lock)
    root = settings.hf_cache_dir
    named = set(settings.hf_cached_repos)
    required = [m for m in hf if m.repo in named or (root / repo_folder_name(m.repo)).is_dir()]
    if hf and not required:
        repos = sorted({m.repo for m in hf})
        raise CachedModelError(f"COMFY_MODELS=cached: no Hugging Face repository of version {lock['id']} is in the "
                               f"cache at {root} ({', '.join(repos)}); set the endpoint's cached model in RunPod's "
                               f"console (Edit Endpoint > Model: one of them, as `comfyver deploy --models cached` "
                               f"printed, and {ENV_REPOS}), or use another placement")
    cache = modelstore.StatCache(settings.state_dir / VERIFIED)
    found: dict[str, Path] = {}
    problems = []
    try:
        for m in required:
            try:
                found[m.key] = locate(root, m, cache, lock["id"])
            except CachedModelError as exc:
                problems.append(str(exc))
    finally:
        cache.save()
    if problems:
        raise CachedModelError(f"COMFY_MODELS=cached: {len(problems)} model(s) cannot be taken from the Hugging Face "
                               "cache:\n  " + "\n  ".join(problems))
    links = links_dir(settings)
    _drop_stale_links(links, set(lock["models"]))
    placed = Placed(links=links)
    for key, path in found.items():
        _link(links, key, path)
        placed.cached[key] = path
    rest = {m.key: m.sha256 for m in hf if m.key not in found}
    rest.update({k: lock["models"][k]["locked"]["sha256"] for k in others})
    for key, sha in sorted(rest.items()):
        where = _elsewhere(settings, key, sha, links)
        if where is None:
            placed.missing.append(key)
        else:
            placed.elsewhere[key] = where
    if placed.missing:
        log.warning("COMFY_MODELS=cached: these models are not in the Hugging Face cache and come another way, but "
                    "are neither on the volume (MODELS_DIR) nor in the image; jobs that use them fail with "
                    "missing_model: %s", ", ".join(placed.missing))
    folders = sorted({key.split("/", 1)[0] for key in lock["models"]})
    lines = ["comfyver_cached:", f"  base_path: {str(links)!r}"] + [f"  {f!r}: {f!r}" for f in folders]
    placed.yaml = settings.state_dir / YAML
    from comfyver.base.fsutil import atomic_write_text
    placed.yaml.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(placed.yaml, "\n".join(lines) + "\n")
    return placed
