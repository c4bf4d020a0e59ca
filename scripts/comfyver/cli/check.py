"""`comfyver check [ID...]`: is every version consistent? (for CI)"""

from __future__ import annotations

import json

from comfyver.base import project
from comfyver.base.errors import ComfyverError
from comfyver.cli.args import verb
from comfyver.lock import check


def register(sub) -> None:
    p = verb(sub, "check", run, help="check versions for CI: valid locks, covered workflows, Python lock in sync",
                       description="Check every version (or the ones named): the lock is valid, its workflows are "
                                   "fully covered by its locked nodes and models, and pyproject.toml / uv.lock match "
                                   "its nodes. Exit 1 with a report otherwise. Example: comfyver check --json")
    p.add_argument("vids", nargs="*", metavar="ID", help="versions to check (default: all)")
    p.add_argument("--no-python", action="store_true", help="skip the pyproject.toml / uv.lock check")


def run(args) -> int:
    root = project.find_root()
    results = check.check_all(root, args.vids or None, python=not args.no_python)
    if not results:
        raise ComfyverError(f"no versions under {root / 'versions'}", hint="create one with `comfyver lock <id> --workflow W`")
    bad = {v: p for v, p in results.items() if p}
    if args.json:
        print(json.dumps({"ok": not bad, "versions": {v: {"ok": not p, "problems": p} for v, p in results.items()}},
                         indent=2))
    else:
        for v, probs in results.items():
            print(f"{'ok  ' if not probs else 'FAIL'} {v}")
            for p in probs:
                print(f"     {p['item']}: {p['problem']}\n       fix: {p['fix']}")
        print(f"{len(results) - len(bad)}/{len(results)} version(s) consistent")
    return 1 if bad else 0
