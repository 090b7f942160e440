"""Background load on a service while a test does something to it (SIGTERM, kill -9):
each call kind loops in its own thread until ``stop``; failures are counted, not raised
(the service is expected to go away under them). A call gets the Load: ``done`` tells a
stream when to end, ``answered()`` counts each answer it reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Load:
    def __init__(self, *calls: Callable[[Load], None]) -> None:
        self.done = threading.Event()
        self.ok = self.failed = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in calls]

    def answered(self) -> None:
        with self._lock:
            self.ok += 1

    def _loop(self, call: Callable[[Load], None]) -> None:
        while not self.done.is_set():
            try:
                call(self)
            except Exception:
                with self._lock:
                    self.failed += 1
                time.sleep(0.01)  # the service is gone or going: do not spin

    def wait_busy(self, calls: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ok < calls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"load: {self.ok} calls answered in {timeout_s} s ({self.failed} failed)")
            time.sleep(0.01)

    def stop(self) -> None:
        self.done.set()
        for t in self._threads:
            t.join(10)


@contextmanager
def running(*calls: Callable[[Load], None]) -> Iterator[Load]:
    load = Load(*calls)
    for t in load._threads:
        t.start()
    try:
        yield load
    finally:
        load.stop()
