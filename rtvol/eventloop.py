"""The event loop a service runs on: uvloop (libuv, C) by default, asyncio's own on request.

Every hop of the tick-to-signal path is a loop turn in some process (a Watch message read, a
batch formed, a sidecar answer picked up, a push), so the loop's own cost per turn and per
socket read is on the signal's path; uvloop's is lower than the selector loop's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoop = Literal["uvloop", "asyncio"]


def factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def from_env() -> EventLoop:
    """The loop RTVOL_EVENT_LOOP names (the services' setting), for a process without settings
    (the benches' bare echoes run on the loop the services they are compared with run on)."""
    return "asyncio" if os.environ.get("RTVOL_EVENT_LOOP", "uvloop") == "asyncio" else "uvloop"


def run(main: Coroutine[Any, Any, T], kind: EventLoop | None = None) -> T:
    """``asyncio.run(main)`` on the ``kind`` loop (None: RTVOL_EVENT_LOOP's)."""
    kind = kind or from_env()
    with asyncio.Runner(loop_factory=factory(kind)) as runner:
        return runner.run(main)
