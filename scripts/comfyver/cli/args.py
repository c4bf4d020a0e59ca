"""The argparse boilerplate every verb shares: one call makes a verb's parser with its help, description
(ending in an example), `--json` and the function it runs."""

from __future__ import annotations

import argparse


def verb(sub, name: str, run, *, help: str, description: str, json: bool = True, **kw) -> argparse.ArgumentParser:
    """A sub-command `name` running `run(args) -> exit code`; `--json` (machine output) unless json=False."""
    p = sub.add_parser(name, help=help, description=description, **kw)
    if json:
        p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=run)
    return p
