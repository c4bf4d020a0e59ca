"""The version lock: versions/<id>/version.json (schema 1, see docs/lock.md and ../shared/DESIGN.md).

Every read is validated against `schema/version-1.schema.json` plus the few
rules a JSON Schema cannot say (model paths that escape `models/`, URLs with
credentials in them). An invalid lock is refused with the file, the JSON
path and what is wrong; an unknown `schema` number is refused, not guessed.
"""

# no `from __future__ import annotations`: the TypedDicts keep their NotRequired at run time (the schema test reads it)

import hashlib
import json
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, NotRequired, TypedDict, cast
from urllib.parse import parse_qsl, urlsplit

import jsonschema

from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.fsutil import atomic_write_json, dumps_json
from comfyver.base.redaction import is_secret_query_key, redact_url

SCHEMA_VERSION: Final = 1
SCHEMA_FILE = Path(__file__).with_name("schema") / "version-1.schema.json"
VERSION_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


# -- the lock's shape, as types: one TypedDict per object of schema/version-1.schema.json (tests/test_lockfile.py
# checks their keys against the schema's properties, required and optional, so the two cannot drift) ----------

class GitOriginal(TypedDict):
    """$defs.gitOriginal: a git source as the user gave it."""
    type: Literal["git"]
    url: str
    ref: NotRequired[str]
    submodules: NotRequired[bool]


class GitLocked(TypedDict):
    """$defs.gitLocked: a git source pinned to a commit and its NAR hash."""
    type: Literal["git"]
    url: str
    rev: str
    ref: NotRequired[str]
    hash: str
    submodules: bool


class RegistryOriginal(TypedDict):
    """$defs.registryOriginal: a node pack from the Comfy registry, by id and version."""
    type: Literal["registry"]
    id: str
    version: str


class LocalOriginal(TypedDict):
    """$defs.localOriginal: a pack taken as it is on this machine's disk (import --from-install --allow-dirty),
    locked as an archive in the comfyver cache (sources/localnode.py)."""
    type: Literal["local"]
    path: str


class ZipLocked(TypedDict):
    """$defs.zipLocked: an archive pinned by its unpacked tree's NAR hash."""
    type: Literal["zip"]
    url: str
    hash: str
    stripRoot: bool
    version: NotRequired[str]


class Core(TypedDict):
    """$.comfyui: the ComfyUI core."""
    original: GitOriginal
    locked: GitLocked


NodeOriginal = GitOriginal | RegistryOriginal | LocalOriginal
NodeLocked = GitLocked | ZipLocked


class Node(TypedDict):
    """$defs.node: one custom node pack."""
    original: NodeOriginal
    locked: NodeLocked
    provides: NotRequired[list[str]]
    writable: NotRequired[bool]


class ModelOriginal(TypedDict):
    """$defs.model.original: a model source as given (hf://, civitai://, https://, file://, gs://)."""
    url: str
    sha256: NotRequired[str]
    size: NotRequired[int]


class ModelLocked(TypedDict):
    """$defs.model.locked: a model pinned by sha256 and size, with the URL that serves those bytes."""
    url: str
    sha256: str
    size: int
    auth: NotRequired[Literal["hf", "civitai", "gcs"]]
    unverified: NotRequired[Literal[True]]


# "from" is a Python keyword: the functional form
Model = TypedDict("Model", {
    "from": NotRequired[Literal["workflow"]],
    "original": ModelOriginal,
    "locked": ModelLocked,
})
Model.__doc__ = """$defs.model: one model file under models/."""

Torch = Literal["cu128", "cu126", "cu124", "cu121", "cpu", "pypi"]
Platform = Literal["linux-x86_64", "macos-arm64"]


class Python(TypedDict):
    """$.python: the Python requirement and the torch build."""
    requires: str
    torch: Torch
    extra: NotRequired[list[str]]
    constraints: NotRequired[list[str]]   # uv's constraint-dependencies (import --from-install: the venv's versions)
    platforms: NotRequired[list[Platform]]


class Lock(TypedDict):
    """The whole lock (versions/<id>/version.json)."""
    schema: Literal[1]
    id: str
    description: NotRequired[str]
    comfyui: Core
    nodes: dict[str, Node]
    models: dict[str, Model]
    python: Python
    workflows: list[str]
    choices: NotRequired[dict[str, str]]


DEFAULT_PYTHON: Python = {"requires": "==3.11.*", "torch": "cu128"}


class LockError(ComfyverError):
    pass


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads(SCHEMA_FILE.read_text()))


def _json_path(parts: Iterable[str | int]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (
            f".{p}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) else f"[{json.dumps(p)}]")
    return out


# `default` is the flake's devShells.default (the comfyver shell); `comfyui` is the core's input key
RESERVED_IDS = frozenset({"default"})
RESERVED_NODE_NAMES = frozenset({"comfyui"})


def is_version_id(vid: object) -> bool:
    """Whether `vid` may name a version: the one rule (the lock, the CLI and the handler's `version_id` read it)."""
    return isinstance(vid, str) and bool(VERSION_ID_RE.match(vid)) and vid not in RESERVED_IDS


def check_version_id(vid: str) -> str:
    if not VERSION_ID_RE.match(vid or ""):
        raise UsageError(
            f"invalid version id {vid!r}",
            hint="use 1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit",
        )
    if vid in RESERVED_IDS:
        raise UsageError(f"version id {vid!r} is reserved (the flake's devShells.{vid} is the comfyver shell)",
                         hint="choose another id")
    return vid


def check_model_path(key: str) -> PurePosixPath:
    """A model key is `<folder>/<name>` (name may have subfolders) under models/."""
    p = PurePosixPath(key)
    if (key.startswith("/") or "\\" in key or "\0" in key or len(p.parts) < 2
            or any(part in ("..", ".", "") for part in key.split("/"))):
        raise ValueError(f"model path {key!r} must be <folder>/<name> inside models/, without '..', '.' or a leading '/'")
    return p


def from_workflow(model: Model) -> bool:
    """Whether a lock's model entry has its source from a workflow (`"from": "workflow"`): untrusted content,
    fetched only inside `web.untrusted_fetches()`, at lock time and at every later fetch."""
    return model.get("from") == "workflow"


def check_url_has_no_secret(url: str) -> None:
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(f"URL {redact_url(url)!r} carries credentials; tokens come from the environment, never from the lock")
    for k, _ in parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_query_key(k):
            raise ValueError(f"URL {redact_url(url)!r} carries a secret query parameter {k!r}; tokens come from the environment")


def validate(data: Any, source: str) -> Lock:
    """Validate a parsed lock; raise LockError naming `source`, the JSON path and the problem."""
    if not isinstance(data, dict):
        raise LockError(f"{source}: $: a version lock must be a JSON object")
    sv = data.get("schema")
    if sv != SCHEMA_VERSION:
        raise LockError(
            f"{source}: $.schema: unsupported lock schema {sv!r} (this comfyver reads schema {SCHEMA_VERSION})",
            hint="upgrade comfyver, or re-create the version with `comfyver new`",
        )
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        lines = []
        for e in errors[:10]:
            msg = e.message
            if e.validator == "oneOf":
                msg = "does not match any allowed form: " + "; ".join(
                    sorted({c.message for c in e.context if len(c.absolute_path) <= len(e.absolute_path) + 1})[:3])
            lines.append(f"{source}: {_json_path(e.absolute_path)}: {msg}")
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise LockError("invalid version lock:\n  " + "\n  ".join(lines) + more)
    for name in sorted(RESERVED_NODE_NAMES & set(data["nodes"])):
        raise LockError(f"{source}: $.nodes[{json.dumps(name)}]: {name!r} is reserved for the ComfyUI core input; "
                        "rename the node")
    if data["id"] in RESERVED_IDS:
        raise LockError(f"{source}: $.id: {data['id']!r} is reserved; choose another id")
    for key, m in data["models"].items():
        try:
            check_model_path(key)
            check_url_has_no_secret(m["original"]["url"])
            check_url_has_no_secret(m["locked"]["url"])
        except ValueError as exc:
            raise LockError(f"{source}: $.models[{json.dumps(key)}]: {exc}") from None
    for name, n in [("comfyui", data["comfyui"])] + [(f"nodes[{json.dumps(k)}]", v) for k, v in data["nodes"].items()]:
        for side in ("original", "locked"):
            url = n[side].get("url")
            if url:
                try:
                    check_url_has_no_secret(url)
                except ValueError as exc:
                    raise LockError(f"{source}: $.{name}.{side}.url: {exc}") from None
    return cast(Lock, data)


def read(path: str | os.PathLike[str]) -> Lock:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(f"{path}: no such version lock",
                        hint="`comfyver list` shows the versions; `comfyver new <id>` creates one") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    data = validate(data, str(path))
    if path.name == "version.json" and path.parent.parent.name == "versions" and data["id"] != path.parent.name:
        raise LockError(f"{path}: $.id: is {data['id']!r} but the folder is {path.parent.name!r}",
                        hint="the id must equal the folder name under versions/")
    return data


def write(path: str | os.PathLike[str], data: Lock) -> None:
    """Validate, then write atomically (temp file + rename)."""
    validate(data, str(path))
    atomic_write_json(path, data)


def canonical(data: Lock) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def lock_digest(data: Lock) -> str:
    """sha256 hex of the lock's canonical JSON: names one exact locked state."""
    return hashlib.sha256(canonical(data)).hexdigest()


def empty(vid: str, comfyui_original: GitOriginal, comfyui_locked: GitLocked) -> Lock:
    return {
        "schema": SCHEMA_VERSION,
        "id": vid,
        "comfyui": {"original": comfyui_original, "locked": comfyui_locked},
        "nodes": {},
        "models": {},
        "python": DEFAULT_PYTHON.copy(),
        "workflows": [],
    }


def render(data: Lock) -> str:
    return dumps_json(data)
