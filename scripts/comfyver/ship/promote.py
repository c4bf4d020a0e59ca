"""`deploy --test`: deploy to a staging endpoint, run the version's tests there, promote only when all pass.

REST API v2 has no release that takes no traffic (a PATCH rolls out to the endpoint's workers at once), so
the tests run on a second endpoint, the staging one. Only when every test passes is the live endpoint
updated, with the same image and settings; a failed test, or a staging deploy that fails, leaves the live
endpoint's release as it was (nothing is sent to it but one GET, made first so that an unknown live
endpoint fails before any staging time is spent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyver.base.errors import UsageError
from comfyver.base.lockfile import Lock
from comfyver.ship import deploy, versiontests
from comfyver.ship.deploy import Deployed, RunPodV2, V2Spec
from comfyver.ship.versiontests import TestResult, TestRun, VersionTest


@dataclass
class Promotion:
    staging: Deployed
    tests: TestRun
    live: Deployed | None  # None: not promoted

    @property
    def promoted(self) -> bool:
        return self.live is not None

    def as_json(self) -> dict[str, Any]:
        return {"staging": self.staging.as_json(), "tests": self.tests.as_json(), "promoted": self.promoted,
                "live": self.live.as_json() if self.live else None}


def deploy_tested(api: RunPodV2, version_id: str, lock: Lock, image: str, tests: list[VersionTest], *,
                  staging_id: str, endpoint_id: str | None = None, create_name: str | None = None,
                  spec: V2Spec | None = None, min_cuda: str | None = None, out_dir: Path,
                  backend_for: Callable[[str], Any] | None = None, poll: float = 1.0,
                  on_staged: Callable[[Deployed], None] | None = None,
                  on_result: Callable[[TestResult], None] | None = None) -> Promotion:
    """Deploy `image` to `staging_id`, run `tests` there (through `backend_for(endpoint id)`, by default the job
    client's RunPodBackend), and deploy it to the live endpoint (`endpoint_id`, or a new `create_name`) only
    when every test passes."""
    from comfyver.ship import jobclient

    deploy.require_digest(image)
    if not tests:
        raise UsageError("--test needs at least one test", hint=f"write versions/{version_id}/tests/*.json")
    if endpoint_id is not None and staging_id == endpoint_id:
        raise UsageError(f"--staging {staging_id} is the live endpoint",
                         hint="test on a second endpoint (a staging one) so that live traffic never meets an "
                              "untested release")
    if endpoint_id is not None:
        api.get_endpoint(endpoint_id)  # an unknown live endpoint fails here, before staging
    staged = deploy.deploy_v2(api, version_id, lock, image, endpoint_id=staging_id, spec=spec, min_cuda=min_cuda,
                              note=f"staging for {endpoint_id or create_name}")
    if on_staged:
        on_staged(staged)
    backend = (backend_for or jobclient.RunPodBackend)(staged.endpoint_id)
    run = versiontests.run_tests(backend, tests, version_id, out_dir, poll=poll, on_result=on_result)
    if not run.passed:
        return Promotion(staging=staged, tests=run, live=None)
    n = len(run.results)
    live = deploy.deploy_v2(api, version_id, lock, image, endpoint_id=endpoint_id, create_name=create_name, spec=spec,
                            min_cuda=min_cuda, note=f"promoted: {n} test(s) passed on staging {staged.endpoint_id} "
                                                    f"(release {staged.release_id})")
    return Promotion(staging=staged, tests=run, live=live)
