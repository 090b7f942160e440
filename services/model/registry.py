"""The models being served: the latest version of every model in the repository, swapped
for a newer one when it appears. A swap never drops in-flight requests: the old batcher
stops taking new ones and finishes what it has queued. A version whose files differ from
the digests its metadata records is refused (logged once, counted) and the version being
served stays (rtvol/repository.py: verify)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from rtvol import repository
from rtvol.errors import NotFound
from rtvol.services.model import metrics
from rtvol.services.model.backends import Backend, ModelFiles
from rtvol.services.model.batcher import Batcher
from rtvol.services.model.model import LoadedModel, load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How every batcher runs (see batcher.py)."""

    inline_max_rows: int = 8
    idle_dispatch: bool = True
    max_queue_rows: int = 16_384
    max_queue_bytes: int = 64 * 1024 * 1024


class Registry:
    def __init__(self, repo: Path, make_backend: Callable[[ModelFiles], Backend],
                 max_queue_delay_us: int | None, executor: Executor | None,
                 policy: BatchPolicy = BatchPolicy()) -> None:
        self.repo = Path(repo)
        self.make_backend = make_backend
        self.delay_override = max_queue_delay_us
        self.executor = executor
        self.policy = policy
        self.served: dict[str, tuple[LoadedModel, Batcher]] = {}
        self.refused: dict[tuple[str, int], str] = {}  # (model, version) -> reason, logged once
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, name: str, version: str = "") -> tuple[LoadedModel, Batcher]:
        entry = self.served.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{name}' (serving {sorted(self.served)})")
        if version and version != entry[0].version_label:
            raise NotFound(f"model '{name}' version {version} is not served "
                           f"(serving version {entry[0].version})")
        return entry

    async def sync(self) -> list[str]:
        """Load what is new in the repository; returns 'model:version' for each load."""
        loaded = []
        for name in repository.models(self.repo):
            current = self.served.get(name)
            version = await asyncio.to_thread(self._pick, name, current[0].version if current else None)
            if version is None:
                continue
            model = await asyncio.to_thread(load, self.repo, name, version, self.make_backend)
            self._swap(model)
            loaded.append(f"{name}:{version}")
        return loaded

    def _pick(self, name: str, served: int | None) -> int | None:
        """The newest version that verifies, looking no further back than the one served
        (None: keep it); a version deleted from the repository still rolls back to an older one."""
        for version in reversed(repository.versions(self.repo, name)):
            if version == served:
                return None
            try:
                repository.verify(self.repo, name, version)
            except repository.IntegrityError as e:
                self._refuse(name, version, e)
                continue
            self.refused.pop((name, version), None)
            return version
        return None

    def _refuse(self, name: str, version: int, error: repository.IntegrityError) -> None:
        if self.refused.get((name, version)) == error.reason:
            return  # polled again: already logged and counted
        self.refused[(name, version)] = error.reason
        metrics.REFUSED.labels(name, error.reason).inc()
        log.error("refusing %s version %d (%s): %s", name, version, error.reason, error)

    def _swap(self, model: LoadedModel) -> None:
        delay_us = (self.delay_override if self.delay_override is not None
                    else model.config.dynamic_batching.max_queue_delay_microseconds)
        batcher = Batcher(model.name, model.backend, model.input.dims, model.max_batch_size,
                          delay_us * 1e-6, self.executor, self.policy.inline_max_rows,
                          self.policy.idle_dispatch, self.policy.max_queue_rows, self.policy.max_queue_bytes)
        old = self.served.get(model.name)
        self.served[model.name] = (model, batcher)  # one assignment: requests see old or new
        metrics.LOADED.labels(model.name, model.backend.name).set(model.version)
        log.info("serving %s version %s on %s", model.name, model.version, model.backend.name)
        if old:
            task = asyncio.get_running_loop().create_task(old[1].close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def poll_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:  # a broken new version must not stop the versions being served
                log.exception("repository poll failed; still serving the loaded versions")

    async def close(self) -> None:
        for _, batcher in self.served.values():
            await batcher.close()
        await asyncio.gather(*self._retiring)
