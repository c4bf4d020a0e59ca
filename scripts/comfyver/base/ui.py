"""Human output: a rich Console that does not wrap tables when output is piped, and `text()` for every piece of
text from outside (names, ids, URLs, errors) that goes into rich markup."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 250)


def text(value: object) -> str:
    """`value` as literal text inside rich markup: a model name, node id or job id with `[/]` in it is printed
    as it is, never read as a tag (an unmatched one raises MarkupError)."""
    return escape(str(value))
