"""`comfyver hash PATH`: the NAR hash Nix would compute, or `--flat` sha256 of a file."""

from __future__ import annotations

import json
import os

from comfyver.base import nar
from comfyver.base.errors import ComfyverError
from comfyver.cli.args import verb


def register(sub) -> None:
    p = verb(sub, "hash", run, help="print the Nix NAR hash (or --flat sha256) of a path",
                       description="Print the SRI NAR hash of a file, directory or symlink: the same as "
                                   "`nix hash path PATH` / `nix-hash --type sha256 PATH`. Example: comfyver hash ./ComfyUI")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--flat", action="store_true", help="plain sha256 of a file's bytes (models, fetchurl)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--base32", dest="form", action="store_const", const="base32", help="Nix base32 form")
    form.add_argument("--hex", dest="form", action="store_const", const="hex", help="hex form")
    form.add_argument("--sri", dest="form", action="store_const", const="sri", help="SRI form (default; --flat defaults to hex)")


def run(args) -> int:
    form = args.form or ("hex" if args.flat else "sri")
    results = {}
    for path in args.paths:
        if not os.path.lexists(path):
            raise ComfyverError(f"{path}: no such file or directory")
        if args.flat and not os.path.isfile(path):
            raise ComfyverError(f"{path}: --flat hashes a regular file's bytes; this is not a file", exit_code=2)
        try:
            digest = nar.flat_hash(path) if args.flat else nar.nar_hash(path)
        except (OSError, ValueError) as exc:
            raise ComfyverError(f"{path}: cannot hash: {exc}") from None
        results[path] = nar.encode(digest, form)
    if args.json:
        print(json.dumps({"mode": "flat" if args.flat else "nar", "form": form, "hashes": results}, indent=2))
    else:
        for path, h in results.items():
            print(h if len(results) == 1 else f"{h}  {path}")
    return 0
