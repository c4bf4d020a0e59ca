"""Resolution: originals -> locked entries, in a bounded parallel pool with a progress bar.

Every item is attempted; failures are collected and raised together
(`ResolveFailed.failures`: key -> message), so one bad input never hides another.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from comfyver.base import ui, web
from comfyver.base.errors import ComfyverError, Reason, UsageError
from comfyver.base.lockfile import GitOriginal, ModelLocked, ModelOriginal, NodeLocked, NodeOriginal
from comfyver.base.web import redact
from comfyver.sources import gitsource, localnode, modelsource, registry

DEFAULT_JOBS = min(8, (os.cpu_count() or 2) * 2)
Original = NodeOriginal | ModelOriginal  # an input as given
Locked = NodeLocked | ModelLocked  # what it resolves to
# kind -> locker; each takes the original of its own kind (Item.kind says which)
LOCKERS: dict[str, Callable[[Any, str], Locked]] = {"git": gitsource.lock, "registry": registry.lock,
                                                    "local": localnode.lock, "model": modelsource.lock}


@dataclass(frozen=True)
class Item:
    key: str  # "comfyui", "nodes.<name>", "models.<folder>/<name>" or any caller key
    kind: str  # git | registry | local | model
    original: Original
    untrusted: bool = False  # named by workflow content: fetched through web.untrusted_fetches()


class ResolveFailed(ComfyverError):
    """`failures`: key -> message; `reasons`: key -> Reason, for the failures whose error carried one;
    `results`: what did resolve (key -> locked), so a caller retrying the failures with other sources need not
    resolve the rest again."""

    def __init__(self, failures: dict[str, str], results: dict[str, Locked] | None = None,
                 reasons: dict[str, Reason] | None = None):
        self.failures, self.results, self.reasons = failures, results or {}, reasons or {}
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        super().__init__(f"{len(failures)} input(s) could not be resolved:\n{lines}",
                         hint="fix the inputs above (`comfyver show <id>` lists them) and run the command again")


def lock_one(kind: str, original: Original, what: str, untrusted: bool = False) -> Locked:
    try:
        locker = LOCKERS[kind]
    except KeyError:
        raise UsageError(f"{what}: unknown input kind {kind!r}") from None
    if untrusted:
        with web.untrusted_fetches():
            return locker(original, what)
    return locker(original, what)


def lock_items(items: list[Item], *, jobs: int = DEFAULT_JOBS, progress: bool = True) -> dict[str, Locked]:
    """Resolve all `items` (at most `jobs` at once); return key -> locked or raise ResolveFailed."""
    results: dict[str, Locked] = {}
    failures: dict[str, str] = {}
    reasons: dict[str, Reason] = {}
    if not items:
        return results
    show = progress and sys.stderr.isatty()
    bar = None
    if show:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(TextColumn("resolving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.description}"), transient=True)
        bar.start()
        task = bar.add_task("", total=len(items))
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(lock_one, it.kind, it.original, it.key, it.untrusted): it for it in items}
            for fut in as_completed(futures):
                it = futures[fut]
                try:
                    results[it.key] = fut.result()
                except ComfyverError as exc:
                    msg = exc.message.removeprefix(f"{it.key}: ")
                    failures[it.key] = redact(msg + (f" (hint: {exc.hint})" if exc.hint else ""))
                    if exc.reason is not None:
                        reasons[it.key] = exc.reason
                except Exception as exc:  # a bug or an OS error: still report per input
                    failures[it.key] = redact(f"{type(exc).__name__}: {exc}")
                if bar:
                    bar.update(task, advance=1, description=ui.text(it.key))
    finally:
        if bar:
            bar.stop()
    if failures:
        raise ResolveFailed(failures, results, reasons)
    return results


# -- parsing what users type ----------------------------------------------------

def _name_from_url(url: str) -> str:
    name = gitsource.node_name_for_url(url)
    if not name:
        raise UsageError(f"cannot derive a node name from {url!r}; pass --name")
    return name


def parse_node_spec(spec: str, submodules: bool = False) -> tuple[str, NodeOriginal]:
    """`<git-url>[@ref]` or `<registry-id>[@version]` -> (node name, original)."""
    if "://" in spec:
        scheme_end = spec.index("://") + 3
        url, ref = spec, None
        at = spec.rfind("@")
        if at > scheme_end and "/" not in spec[at:] and ":" not in spec[at:]:
            url, ref = spec[:at], spec[at + 1:]
        gitsource.check_url(url, spec)
        original: GitOriginal = {"type": "git", "url": url, "ref": ref or "latest"}
        if ref:
            gitsource.check_ref(ref, spec)
        if submodules:
            original["submodules"] = True
        return _name_from_url(url), original
    node_id, _, version = spec.partition("@")
    if not registry.ID_RE.match(node_id):
        raise UsageError(f"{spec!r} is neither a git URL (https://...) nor a Comfy Registry id[@version]")
    return node_id.lower(), {"type": "registry", "id": node_id, "version": version or "latest"}


def parse_model_source(src: str, sha256: str | None = None, size: int | None = None) -> ModelOriginal:
    """A model source as the lock's `original`; a Hugging Face file URL becomes its hf:// path. With sha256
    and size it is pinned without a download."""
    modelsource.check_source(src, src)
    src = modelsource.hf_path_for_url(src) or src
    original: ModelOriginal = {"url": src}
    if sha256:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise UsageError(f"--sha256 {sha256!r} is not 64 lowercase hex digits")
        original["sha256"] = sha256
    if size is not None:
        if not sha256 or not isinstance(size, int) or not 0 <= size < 2 ** 63:
            raise UsageError(f"--size {size!r}: needs --sha256 too, and a byte count from 0 to 2^63-1")
        original["size"] = size
    return original


def kind_of(original: Original) -> str:
    kind = original.get("type")  # a model's original has no type
    return kind if isinstance(kind, str) and kind in ("git", "registry", "local") else "model"
