#!/usr/bin/env bash
# The main job on the bundled example version, offline:
#   serve the example's upstream on 127.0.0.1, prove the lock (recheck), realize the
#   version without Nix, verify it, and run its workflow through the RunPod handler.
# Usage: bash examples/run.sh [OUT_DIR]     (outputs land in OUT_DIR, default ./example-out)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-./example-out}
log=$(mktemp -t comfyver-example-upstream.XXXXXX)
python3 examples/upstream.py >"$log" 2>&1 &
upstream=$!

upstream_died() {
  echo "error: the example's upstream (python3 examples/upstream.py) exited; its output:" >&2
  sed 's/^/  | /' "$log" >&2
}
finish() {
  rc=$?
  if [ "$rc" != 0 ] && ! kill -0 "$upstream" 2>/dev/null; then upstream_died; fi
  kill "$upstream" 2>/dev/null || true
  rm -f "$log"
  exit "$rc"
}
trap finish EXIT

# wait until it serves; stop at once if it dies (a first run downloads the pinned ComfyUI source, 8 MB)
for _ in $(seq 600); do
  grep -q '^serving' "$log" && break
  kill -0 "$upstream" 2>/dev/null || exit 1
  sleep 0.2
done
grep -q '^serving' "$log" || { echo "error: the example's upstream did not start within 120 s" >&2; exit 1; }

comfyver show example
comfyver recheck example                 # every pin fetched again and re-hashed
comfyver realize example --into ./example-env
comfyver verify example --dir ./example-env
comfyver probe example --dir ./example-env   # ComfyUI's own node loading registers exactly what the lock records
COMFY_HOME=./example-env COMFY_PYTHON=./example-env/.venv/bin/python COMFYUI_STATE_DIR=./example-state \
  python3 -m handler cli --input examples/job.json --out "$out"
comfyver verify example --dir ./example-env --deep   # running it wrote nothing into the realized tree
echo "outputs in $out"
