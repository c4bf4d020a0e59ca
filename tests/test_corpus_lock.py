"""Every example workflow of the real node-pack corpus, locked with one command, offline (tests/support/corpuslock.py):
each either locks (with --model --sha256 --size only for models no source is knowable for offline) and then
`check` passes and a second `lock` adds nothing, or fails only for a reason that cannot be mended here, named."""

from __future__ import annotations

import re

from tests.support import corpuslock, nodepacks

# why a corpus workflow cannot lock offline: a pack the corpus does not hold, a core newer than 0.3.75, or a
# class that no offline data names (ComfyUI-Manager's map lists its pack under a newer name, the registry is down)
EXPECTED = [re.compile(r"git ls-remote failed: .*repository '.*/([^/]+/[^/]+)/' not found"),
            re.compile(r"built into ComfyUI [0-9.]+ but not in the locked core"),
            re.compile(r"Comfy Registry lookup failed: the Comfy Registry at .* cannot be reached")]


def test_the_corpus_example_workflows_lock_with_one_command(tmp_path):
    srv, proj, env = corpuslock.setup(tmp_path)
    held = {p["repo"].lower() for p in nodepacks.manifest()["packs"]}
    try:
        outcomes = [corpuslock.lock_one(proj, env, vid, wf) for vid, wf in corpuslock.workflows()]
    finally:
        srv.close()
    ok = [o for o in outcomes if o.ok]
    assert len(outcomes) == 44 and len(ok) >= 21, [(o.workflow, o.problems[:1]) for o in outcomes if not o.ok]
    for o in ok:  # check and a warm re-lock agree with the lock
        assert (o.check_rc, o.relock_rc, o.relock_added) == (0, 0, []), o
    for o in outcomes:
        for p in o.problems:
            m = next((rx.search(p["problem"]) for rx in EXPECTED if rx.search(p["problem"])), None)
            assert m is not None, (o.workflow, p)
            if m.re is EXPECTED[0]:
                assert m.group(1).lower() not in held  # only packs the corpus lacks may be "not found"
