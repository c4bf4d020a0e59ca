"""`comfyver export <id> --format script|dockerfile|report`: artifacts for installs without Nix."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from comfyver.base import project
from comfyver.base.fsutil import atomic_write_text
from comfyver.cli.args import verb
from comfyver.realize import export


def register(sub) -> None:
    p = verb(sub, "export", run, help="write an install script, a Dockerfile or a dependency report",
                       description="Generate an artifact from a version's lock: `script` (standalone bash "
                                   "installer using git, curl/wget and uv that checks every hash), `dockerfile` "
                                   "(BuildKit Dockerfile running that installer; models baked in) or `report` "
                                   "(JSON: nodes, revs, models, sizes, Python packages). --json prints what was written "
                                   "as {id, format, path, bytes}, the artifact itself as `text` without -o. "
                                   "Example: comfyver export sdxl-base --format script -o install.sh")
    p.add_argument("id", help="version id")
    p.add_argument("--format", choices=export.FORMATS, default="report", help="what to write (default: report)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--base", default=export.DEFAULT_BASE, metavar="IMAGE",
                   help="base image for --format dockerfile (pin it as NAME@sha256:<digest>)")


def run(args) -> int:
    text = export.render(project.find_root(), args.id, args.format, args.base)
    if args.output:
        atomic_write_text(args.output, text)
        if args.format == "script":
            os.chmod(args.output, 0o755)
        if not args.json:
            print(args.output, file=sys.stderr)
    elif not args.json:
        sys.stdout.write(text)
    if args.json:
        done = {"id": args.id, "format": args.format, "path": str(args.output) if args.output else None,
                "bytes": len(text.encode())}
        print(json.dumps(done if args.output else {**done, "text": text}, indent=2, ensure_ascii=False))
    return 0
