"""The argparse boilerplate every verb shares: one call makes a verb's parser with its help, description
(ending in an example), `--json` and the function it runs."""

from __future__ import annotations

import argparse


def verb(sub, name: str, run, *, help: str, description: str, **kw) -> argparse.ArgumentParser:
    """A sub-command `name` running `run(args) -> exit code`, with `--json` (machine output: one JSON object on
    stdout), which every verb has (tests/test_versions.py walks the parser to check)."""
    p = sub.add_parser(name, help=help, description=description, **kw)
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=run)
    return p
