#!/usr/bin/env bash
# The main job on the bundled example version, offline:
#   serve the example's upstream on 127.0.0.1, prove the lock (recheck), realize the
#   version without Nix, verify it, and run its workflow through the RunPod handler.
# Usage: bash examples/run.sh [OUT_DIR]     (outputs land in OUT_DIR, default ./example-out)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-./example-out}
python3 examples/upstream.py > /tmp/comfyver-example-upstream.log 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q serving /tmp/comfyver-example-upstream.log 2>/dev/null && break; sleep 0.2; done

comfyver show example
comfyver recheck example                 # every pin fetched again and re-hashed
comfyver realize example --into ./example-env
comfyver verify example --dir ./example-env
COMFY_HOME=./example-env COMFY_PYTHON=./example-env/.venv/bin/python python3 -m handler cli --input examples/job.json --out "$out"
echo "outputs in $out"
