"""The models being served: for every model in the repository, the version its version
policy names (default: the newest), and the shadow version it names, loaded beside it
(rtvol/version_policy.py). A request without a version gets the served one; the shadow is
asked for by its version number. A swap never drops in-flight requests: a batcher no longer
needed stops taking new ones and finishes what it has queued. A version whose files differ
from the digests its metadata records is refused (logged once, counted) and the version
being served stays (rtvol/repository.py: verify)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from rtvol import repository, version_policy
from rtvol.errors import NotFound
from rtvol.services.model import metrics
from rtvol.services.model.backends import Backend, ModelFiles
from rtvol.services.model.batcher import Batcher
from rtvol.services.model.model import LoadedModel, load
from rtvol.services.model.served import ServedWork
from rtvol.services.model.shadow import ShadowBatcher, ShadowPolicy
from rtvol.tasks import next_round

log = logging.getLogger(__name__)


Entry = tuple[LoadedModel, Batcher]


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
                 policy: BatchPolicy = BatchPolicy(), shadow_executor: Executor | None = None,
                 shadow_policy: ShadowPolicy | None = None) -> None:
        """``shadow_executor``: where shadow batches run, all of them (none on the event loop),
        so a served batch never waits behind a shadow one in the backend thread's queue; they
        run in slices that yield to served work (``shadow_policy``, shadow.py)."""
        self.repo = Path(repo)
        self.make_backend = make_backend
        self.delay_override = max_queue_delay_us
        self.executor = executor
        self.shadow_executor = shadow_executor
        self.policy, self.shadow_policy = policy, shadow_policy or ShadowPolicy()
        self.served_work = ServedWork()  # every served version's requests, what shadows yield to
        self.served: dict[str, Entry] = {}
        self.shadows: dict[str, Entry] = {}  # loaded beside the served version, asked for by number
        self.refused = version_policy.Refusals(lambda model, why: metrics.REFUSED.labels(model, why).inc())
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, name: str, version: str = "") -> Entry:
        entry = self.served.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{name}' (serving {sorted(self.served)})")
        if version and version != entry[0].version_label:
            shadow = self.shadows.get(name)
            if shadow is not None and version == shadow[0].version_label:
                return shadow
            raise NotFound(f"model '{name}' version {version} is not served "
                           f"(serving version {entry[0].version}"
                           + (f", shadow version {shadow[0].version})" if shadow else ")"))
        return entry

    async def sync(self) -> list[str]:
        """Load what the repository's policies ask for; returns 'model:version' for each load."""
        loaded = []
        for name in repository.models(self.repo):
            served, shadow = self.served.get(name), self.shadows.get(name)
            targets = await asyncio.to_thread(self.refused.follow, self.repo, name,
                                              served[0].version if served else None,
                                              shadow[0].version if shadow else None)
            if targets is None or targets.serve is None:
                continue  # keep what is loaded
            wanted = []
            for version, now, as_shadow in ((targets.serve, served, False), (targets.shadow, shadow, True)):
                if version is not None and (now is None or now[0].version != version):
                    # loaded anew even when it is loaded in the other role (a promoted shadow):
                    # a backend reuses its buffers, so two batchers must never share one
                    model = await asyncio.to_thread(load, self.repo, name, version, self.make_backend)
                    loaded.append(f"{name}:{version}")
                    now = self._batched(model, as_shadow)
                wanted.append(None if version is None else now)
            new_served, new_shadow = wanted
            assert new_served is not None
            self._install(name, new_served, new_shadow)
            for entry in (served, shadow):
                if entry is not None and entry is not new_served and entry is not new_shadow:
                    self._retire(entry)
        return loaded

    def _batched(self, model: LoadedModel, shadow: bool) -> Entry:
        delay_us = (self.delay_override if self.delay_override is not None
                    else model.config.dynamic_batching.max_queue_delay_microseconds)
        p = self.policy
        executor, inline_rows = self.executor, p.inline_max_rows
        if shadow and self.shadow_executor is not None:
            executor, inline_rows = self.shadow_executor, 0
        args = (model.name, model.backend, model.input.dims, model.max_batch_size, delay_us * 1e-6, executor,
                inline_rows, p.idle_dispatch, p.max_queue_rows, p.max_queue_bytes)
        if shadow:
            return model, ShadowBatcher(*args, yield_to=self.served_work, policy=self.shadow_policy)
        return model, Batcher(*args, served=self.served_work)

    def _install(self, name: str, served: Entry, shadow: Entry | None) -> None:
        model = served[0]
        if self.served.get(name) is not served:
            log.info("serving %s version %s on %s", name, model.version, model.backend.name)
        self.served[name] = served  # one assignment: requests see old or new
        metrics.LOADED.labels(name, model.backend.name).set(model.version)
        if shadow is None:
            if self.shadows.pop(name, None) is not None:
                log.info("%s: no shadow version", name)
            metrics.SHADOW.labels(name).set(0)
            return
        if self.shadows.get(name) is not shadow:
            log.info("shadowing %s version %s", name, shadow[0].version)
        self.shadows[name] = shadow
        metrics.SHADOW.labels(name).set(shadow[0].version)

    def _retire(self, entry: Entry) -> None:
        task = asyncio.get_running_loop().create_task(entry[1].close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def poll_forever(self, interval_s: float) -> None:
        while True:
            await next_round(interval_s)
            try:
                await self.sync()
            except Exception:  # a broken new version must not stop the versions being served
                log.exception("repository poll failed; still serving the loaded versions")

    async def close(self) -> None:
        for _, batcher in [*self.served.values(), *self.shadows.values()]:
            await batcher.close()
        await asyncio.gather(*self._retiring)
