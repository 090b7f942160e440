"""The gateway follows the repository's version policy (rtvol/version_policy.py) as the
sidecar does: tier 2 loads the served version (tier 1's answers carry the sidecar's own), and
the shadow is pointed at the shadow version. Checked every ``poll_s``; a version that fails its
digest check, or whose labels the workers' shared signal table cannot hold, is refused
(logged and counted once) and the loaded one stays."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from rtvol import version_policy
from rtvol.services.gateway import labels, metrics
from rtvol.services.gateway.predictor import Predictor
from rtvol.services.gateway.shadow import Shadow
from rtvol.services.gateway.tier2 import LocalModel
from rtvol.tasks import BackgroundTask, next_round

log = logging.getLogger(__name__)
REFUSALS = version_policy.Refusals(lambda model, why: metrics.MODEL_REFUSED.labels(model, why).inc())


def served_version(repo: Path, name: str) -> int | None:
    """The version the policy serves now (None: none verifies), for tier 2 at start."""
    targets = REFUSALS.follow(repo, name, None, None)
    return None if targets is None else targets.serve


class VersionFollower:
    def __init__(self, repo: Path, predictor: Predictor, shadow: Shadow | None, poll_s: float,
                 ort_threads: int, follow_tier2: bool = True) -> None:
        self.repo, self.predictor, self.shadow, self.poll_s = Path(repo), predictor, shadow, poll_s
        self.ort_threads, self.follow_tier2 = ort_threads, follow_tier2
        self._task = BackgroundTask()
        self._gauges(int(predictor.tiers.local.version), None)

    async def check(self) -> None:
        local = self.predictor.tiers.local
        shadowing = int(self.shadow.version) if self.shadow is not None and self.shadow.version else None
        targets = await asyncio.to_thread(REFUSALS.follow, self.repo, local.name, int(local.version),
                                          shadowing)
        if targets is None:
            return
        if (self.follow_tier2 and targets.serve is not None and str(targets.serve) != local.version
                and not labels.refuses(local.name, str(targets.serve), "the repository")):
            loaded = await asyncio.to_thread(LocalModel, self.repo, local.name, targets.serve,
                                             self.ort_threads)
            self.predictor.tiers = replace(self.predictor.tiers, local=loaded)  # one assignment
            log.info("tier 2 serves %s version %s", local.name, loaded.version)
        if self.shadow is not None:
            self.shadow.version = "" if targets.shadow is None else str(targets.shadow)
        self._gauges(int(self.predictor.tiers.local.version), targets.shadow)

    def _gauges(self, serve: int, shadow: int | None) -> None:
        name = self.predictor.tiers.local.name
        metrics.MODEL_VERSION.labels(name, "serving").set(serve)
        metrics.MODEL_VERSION.labels(name, "shadow").set(shadow or 0)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a broken version must not stop the loaded one being served
                log.exception("version policy check failed; keeping the loaded versions")
            await next_round(self.poll_s)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()
