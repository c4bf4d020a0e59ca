"""Structured job errors: what failed, which node, ComfyUI's message, what to do next. Never a secret."""

from __future__ import annotations

import os
import re

SECRET_ENV = ("BUCKET_SECRET_ACCESS_KEY", "BUCKET_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
              "AWS_SESSION_TOKEN", "RUNPOD_AI_API_KEY", "RUNPOD_API_KEY", "HF_TOKEN", "CIVITAI_TOKEN",
              "GCS_HMAC_SECRET", "COMFY_ORG_API_KEY", "REGISTRY_PASSWORD")
# any other variable named like a credential is masked too
SECRET_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)")
# query parameters whose value is a credential (presigned URLs: X-Amz-Security-Token, X-Goog-Credential, ...)
SECRET_PARAM = re.compile(r"(?i)([?&][^=&\s\"']*(?:signature|token|key|sig|secret|credential|password|auth)"
                          r"[^=&\s\"']*=)[^&\s\"']+")


def _secret_values() -> list[str]:
    names = set(SECRET_ENV) | {n for n in os.environ if SECRET_NAME.search(n)}
    vals = {os.environ.get(n) for n in names}
    return sorted((v for v in vals if v and len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    """Mask secrets from the environment, URL userinfo and credential-looking query values in `text`."""
    if not isinstance(text, str):
        text = str(text)
    for v in _secret_values():
        text = text.replace(v, "***")
    text = re.sub(r"(://)[^/\s@]+@", r"\1***@", text)
    return SECRET_PARAM.sub(r"\1***", text)


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
