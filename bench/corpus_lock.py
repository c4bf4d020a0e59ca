"""One `comfyver lock` per example workflow of the real node-pack corpus (node-packs-v2, 139 workflows, the real
ComfyUI history), offline (see tests/support/corpuslock.py).

    python bench/corpus_lock.py [--json] [--no-probe] [--own-env] [--only SUBSTRING ...]

By default each lock runs `--probe` with this interpreter (so provides is what ComfyUI registers) and
`--no-python`. With `--own-env` each lock is the user's plain command: the Python lock on, proven in the
version's own environment (lock/proofenv.py; the first downloads the wheels into uv's cache, ~6 GB).
`--only` keeps the workflows whose file name contains one of the substrings.

Prints per workflow: locked or why not (corpuslock.classify), the lock commands it took (1, or 2-3 where
models were pinned by hand), the proof's own seconds cold and warm (lock --json's proof_seconds), the models
pinned by hand (--model --sha256 --size, only for models
with no source reachable offline), lock wall time cold and warm (a second lock of the same version), and
whether `check` agrees; then the totals and the warm/cold ratio.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    from tests.support import corpuslock

    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        srv, proj, env = corpuslock.setup(Path(tmp))
        try:
            py = None if "--no-probe" in sys.argv else sys.executable
            only = [a for i, a in enumerate(sys.argv) if i and sys.argv[i - 1] == "--only"]
            chosen = [(v, w) for v, w in corpuslock.workflows() if not only or any(o in w.name for o in only)]
            outcomes = [corpuslock.lock_one(proj, env, vid, wf, py, own_env="--own-env" in sys.argv)
                        for vid, wf in chosen]
        finally:
            srv.close()
    if "--json" in sys.argv:
        print(json.dumps([asdict(o) | {"why": corpuslock.classify(o)} for o in outcomes], indent=2))
        return 0
    print(f"{'workflow':<48} {'result':<7} {'cmds':>4} {'pins':>4} {'cold s':>7} {'proof s':>7} {'warm s':>7} "
          f"{'proof s':>7} check / why not")
    for o in outcomes:
        if o.ok:
            print(f"{o.workflow[:48]:<48} {'locked':<7} {o.commands:>4} {o.pins:>4} {o.cold_s:>7.2f} {o.proof_s:>7.2f} "
                  f"{o.warm_s:>7.2f} {o.proof_warm_s:>7.2f} {'ok' if o.check_rc == 0 else 'FAIL'}")
        else:
            print(f"{o.workflow[:48]:<48} {'no':<7} {o.commands:>4} {'':>4} {o.cold_s:>7.2f} {o.proof_s:>7.2f} {'':>7} "
                  f"{'':>7} {corpuslock.classify(o)}")
    ok = [o for o in outcomes if o.ok]
    why = Counter(corpuslock.classify(o) for o in outcomes)
    servable = len(outcomes) - why[corpuslock.UNSERVABLE]
    print(f"\n{len(outcomes)} workflows; {why[corpuslock.UNSERVABLE]} need a pack the corpus lacks; of the other "
          f"{servable}, {len(ok)} locked ({100 * len(ok) / max(servable, 1):.0f} %; "
          f"{sum(1 for o in ok if o.commands == 1)} with one command, the others after the model pins or --pip the "
          f"first run named), each proven by the "
          f"probe; check agrees on {sum(o.check_rc == 0 for o in ok)}, a warm re-lock adds nothing on "
          f"{sum(o.relock_rc == 0 and not o.relock_added for o in ok)}")
    for w, n in why.most_common():
        if w not in ("locked", corpuslock.UNSERVABLE):
            print(f"  not locked: {n:>3}  {w}")
    print(f"hand-given model pins (no source offline): {sum(o.pins for o in ok)} over {sum(1 for o in ok if o.pins)} "
          f"workflows; requirements declared with --pip as the notes said: "
          f"{', '.join(sorted({d for o in outcomes for d in o.declared})) or 'none'} over "
          f"{sum(1 for o in outcomes if o.declared)} workflows; other manual steps: 0")
    cold = sum(o.cold_s for o in ok)
    warm = sum(o.warm_s for o in ok)
    print(f"lock wall time over the locked ones: cold {cold:.1f} s, warm {warm:.1f} s (warm/cold {warm / max(cold, 1e-9):.2f})")
    most = max((o.proof_s for o in ok), default=0)
    print(f"the proof's own cost over them: cold {sum(o.proof_s for o in ok):.1f} s (most {most:.1f} s "
          f"for one workflow, probes of packs already probed are cached), warm {sum(o.proof_warm_s for o in ok):.1f} s "
          f"(most {max((o.proof_warm_s for o in ok), default=0):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
