"""Served work in the sidecar: requests for a served version, counted from the moment they
are queued until they are answered. Shadow batches yield to it (shadow.py)."""

from __future__ import annotations

import asyncio


class ServedWork:
    def __init__(self) -> None:
        self.waiting = 0  # served requests queued or computing
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.waiting += 1
        self.idle.clear()

    def leave(self, n: int = 1) -> None:
        self.waiting -= n
        if not self.waiting:
            self.idle.set()
