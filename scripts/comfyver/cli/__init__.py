"""The `comfyver` command line.

Each concern registers its own verbs: a module in COMMAND_MODULES exposes
`register(subparsers)` and sets `func=` on its parsers. A func returns an exit
code (0 ok, 1 the checked thing is wrong, 2 usage) and raises ComfyverError
for anything the user should read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from comfyver import __version__
from comfyver.base.errors import ComfyverError

# modules that add verbs; one line each
COMMAND_MODULES = [
    "comfyver.cli.push",
    "comfyver.cli.deploy",
    "comfyver.cli.releases",
    "comfyver.cli.rollback",
    "comfyver.cli.test",
    "comfyver.cli.run",
    "comfyver.cli.ui",
    "comfyver.cli.hash",
    "comfyver.cli.analyze",
    "comfyver.cli.lock",
    "comfyver.cli.check",
    "comfyver.cli.import_",
    "comfyver.cli.versions",
    "comfyver.cli.realize",
    "comfyver.cli.verify",
    "comfyver.cli.models",
    "comfyver.cli.export",
    "comfyver.cli.gc",
    "comfyver.cli.probe",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="comfyver",
        description="Reproducible ComfyUI environments for RunPod: every input pinned by hash.",
    )
    p.add_argument("--version", action="version", version=f"comfyver {__version__}")
    p.add_argument("--root", help="project root (default: nearest folder with versions/, or $COMFYVER_ROOT)")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once when another comfyver is changing the same version (default: wait)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    saved_root, saved_wait = os.environ.get("COMFYVER_ROOT"), os.environ.get("COMFYVER_NO_WAIT")
    if args.root:
        os.environ["COMFYVER_ROOT"] = args.root  # for this call only (main() also runs in-process)
    if args.no_wait:
        os.environ["COMFYVER_NO_WAIT"] = "1"
    try:
        return int(args.func(args) or 0)
    except ComfyverError as exc:
        from comfyver.base.web import redact

        if getattr(args, "json", False):
            print(json.dumps({"error": redact(exc.message), "hint": exc.hint}), file=sys.stdout)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for name, saved in (("COMFYVER_ROOT", saved_root), ("COMFYVER_NO_WAIT", saved_wait)):
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved


if __name__ == "__main__":
    raise SystemExit(main())
