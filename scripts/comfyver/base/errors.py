"""The one error type the CLI turns into a clean message and an exit code."""

from __future__ import annotations

import enum

# Exit codes (../shared/DESIGN.md beside the checkout): 0 ok, 1 the thing checked is wrong, 2 usage.
EXIT_MISMATCH = 1
EXIT_USAGE = 2


class Reason(enum.Enum):
    """Why an input failed, set where the error is raised, for callers that choose what to do next by it
    (never by reading the message)."""
    UNREACHABLE = "unreachable"  # no connection to the server (DNS, refused, timeout): it may answer later
    NOT_FOUND = "not-found"      # the server answers, but the ref, commit or version asked for is not (any more) there


class ComfyverError(Exception):
    """An error that names its input and, where possible, what to do next.

    `exit_code` 1 = the thing checked is wrong (mismatch, missing, unreachable),
    2 = the request itself is malformed (usage). `reason`: why, where a caller decides by it (else None)."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = EXIT_MISMATCH,
                 reason: Reason | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.reason = reason

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class UsageError(ComfyverError):
    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, exit_code=EXIT_USAGE)
