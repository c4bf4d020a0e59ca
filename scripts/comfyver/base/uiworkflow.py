"""ComfyUI's UI-format workflow (what the editor saves: `nodes` + `links`): how it is told from the API format
and how one of its links reads. One rule for the lock's analysis (lock/analyze) and the handler's conversion to
the API format (handler/workflow). Standard library only (the handler imports it)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Link(NamedTuple):
    id: Any
    origin_id: Any
    origin_slot: Any
    target_id: Any
    target_slot: Any
    type: Any


def is_ui(data: object) -> bool:
    """A UI-format workflow: an object whose `nodes` is a list (an API-format node is always an object)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def read_link(link: object) -> Link | None:
    """A link as the editor writes it, `[id, origin id, origin slot, target id, target slot, type]` or an object
    with those keys (subgraphs); None for anything else. Values are not checked: callers check what they read."""
    if isinstance(link, dict):
        return Link(link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                    link.get("target_slot"), link.get("type"))
    if isinstance(link, list) and len(link) >= 5:
        return Link(link[0], link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return None
