"""Structured job errors: what failed, which node, ComfyUI's message, what to do next. Never a secret."""

from __future__ import annotations

# the one secret list and masking rule, shared with comfyver (SEC3): env values, URL userinfo, credential queries
from comfyver.base.redaction import redact  # re-exported: handler modules import it from here


class JobError(Exception):
    """One failed job. `kind` is a stable word clients can switch on (see docs/handler.md)."""

    def __init__(self, kind: str, message: str, *, hint: str | None = None, node_id: str | None = None,
                 node_type: str | None = None, comfy_message: str | None = None, problems: list | None = None,
                 log_tail: list[str] | None = None, refresh_worker: bool = False, **details):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint
        self.node_id, self.node_type, self.comfy_message = node_id, node_type, comfy_message
        self.problems, self.log_tail, self.refresh_worker, self.details = problems, log_tail, refresh_worker, details

    def to_dict(self) -> dict:
        d = {"type": self.kind, "message": self.message}
        for k in ("hint", "node_id", "node_type", "comfy_message", "problems", "log_tail"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        d.update({k: v for k, v in self.details.items() if v is not None})
        return _redact_tree(d)


def _redact_tree(obj):
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, list):
        return [_redact_tree(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _redact_tree(v) for k, v in obj.items()}
    return obj


def bad_input(message: str, hint: str | None = None, **kw) -> JobError:
    return JobError("input", message, hint=hint, **kw)
