"""`rtvol bench pipeline --sidecar-loss`: nothing lost when the model sidecar dies under load
(issue 12). Under the bench's open-loop feed, with REST predicts every 10 ms (a thread) and the
bench's Subscribe client taking every pushed signal, the sidecar is killed (SIGKILL), left
down for DOWN_S and restarted as the bench started it (ready when the restart returns).

Measured: the requests sent and those failed (not 200, a signal carrying an error, or a
transport error); the tiers of the signals pushed while the sidecar was down (tier 2 fills in);
the seconds from its return until every stock of the feed (each closes a step every
12 / speedup s) has had a tier-1 signal pushed after it, bounded by WAIT_S."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from rtvol.loadtest.bench.harness import Http, Processes
from rtvol.loadtest.bench.pipeline_feed import FeedPlan, feeder_running
from rtvol.localproc import wait_until

SIDECAR = "model"  # the sidecar's name among the bench's processes
DOWN_S = 2.0  # killed -> restart begun
WAIT_S = 10.0  # the longest wait for tier 1 after the return (not back by then: this value)
WARM_S = 30.0  # the feed's start (its messages are built first) -> every stock on tier 1
# the feed outlasts warm-up, the outage, the restart and the wait; it is stopped once measured
FEED_S = 40.0
PREDICT_EVERY_S, PREDICT_STOCKS = 0.01, 4
KEPT_FAILURES = 5  # the first few failures, for the report


def _now_us() -> int:
    return time.time_ns() // 1000


class Predicts:
    """POST /v1/predict for PREDICT_STOCKS of ``stocks`` (round robin) every PREDICT_EVERY_S,
    on a thread: the requests sent and those that failed."""

    def __init__(self, http_base: str, stocks: range) -> None:
        self.client, self.stocks = Http(http_base), stocks
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.sent * PREDICT_STOCKS
            ids = [self.stocks[(first + k) % len(self.stocks)] for k in range(PREDICT_STOCKS)]
            self.sent += 1
            if (failure := self._failure(json.dumps({"stock_ids": ids}).encode())) is not None:
                self.failed += 1
                if len(self.failures) < KEPT_FAILURES:
                    self.failures.append(failure)
            time.sleep(PREDICT_EVERY_S)

    def _failure(self, body: bytes) -> str | None:
        try:
            signals = json.loads(self.client.call("POST", "/v1/predict", body))["signals"]
        except RuntimeError as e:  # not 200
            return str(e)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            self.client.conn.close()  # the next request opens a new connection
            return repr(e)
        errors = [s for s in signals if "error" in s]
        return f"signals with an error: {errors}" if errors else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.conn.close()


class Pushed:
    """The signals pushed for ``stocks`` (arrival µs, stock, tier), taken as they come from
    ``take`` (the bench's Subscribe client)."""

    def __init__(self, take: Callable[[], np.ndarray], stocks: range) -> None:
        self.take, self.stocks = take, stocks
        self.chunks: list[np.ndarray] = [np.zeros((0, 3), np.int64)]

    def poll(self) -> np.ndarray:
        rows = self.take()
        self.chunks.append(rows[(rows[:, 1] >= self.stocks.start) & (rows[:, 1] < self.stocks.stop)])
        return self.chunks[-1]

    def all(self) -> np.ndarray:
        return np.concatenate(self.chunks)

    def wait_tier1(self, since_us: int, wait_s: float) -> float | None:
        """Seconds from ``since_us`` until every stock had a tier-1 signal pushed after it,
        waiting up to ``wait_s`` (None: not all within it)."""
        tier1: list[np.ndarray] = [np.zeros((0, 3), np.int64)]

        def all_back() -> bool:
            rows = self.poll()
            tier1.append(rows[(rows[:, 0] >= since_us) & (rows[:, 2] == 1)])
            return tier1_back_s(np.concatenate(tier1), self.stocks, since_us) is not None

        wait_until(all_back, wait_s, 0.02)
        took = tier1_back_s(np.concatenate(tier1), self.stocks, since_us)
        return took if took is not None and took <= wait_s else None


def tier1_back_s(tier1: np.ndarray, stocks: range, since_us: int) -> float | None:
    """From tier-1 signals (arrival µs, stock, tier) pushed after ``since_us``: the seconds
    until the last of ``stocks`` had its first; None while one has none."""
    if len(np.unique(tier1[:, 1])) < len(stocks):
        return None
    order = np.lexsort((tier1[:, 0], tier1[:, 1]))  # by stock, then arrival
    _, first = np.unique(tier1[order, 1], return_index=True)
    return float(tier1[order[first], 0].max() - since_us) / 1e6


def run(ps: Processes, plan: FeedPlan, take: Callable[[], np.ndarray], http_base: str, workdir: Path
        ) -> dict[str, Any]:
    """The phase on the running stack (``ps``: its sidecar is killed and restarted), fed with
    ``plan`` (fresh stocks; its duration raised to FEED_S); ``take``: the signals pushed since
    the last take (arrival µs, stock, tier). Returns its figures."""
    plan = replace(plan, duration_s=max(plan.duration_s, FEED_S))
    stocks = range(plan.first_stock, plan.first_stock + plan.stocks)
    pushed = Pushed(take, stocks)
    take()  # what earlier modes left
    with feeder_running("sidecar-loss", plan, workdir):
        if pushed.wait_tier1(_now_us(), WARM_S) is None:
            raise RuntimeError(f"sidecar loss: not every stock had a tier-1 signal within {WARM_S} s")
        predicts = Predicts(http_base, stocks)
        try:
            wait_until(lambda: predicts.sent >= 50, 5, 0.02)  # steady before the kill
            killed_us = _now_us()
            ps.kill(SIDECAR)
            time.sleep(DOWN_S)
            restarting_us = _now_us()
            ps.restart(SIDECAR)
            back_us = _now_us()
            took = pushed.wait_tier1(back_us, WAIT_S)
            time.sleep(0.5)  # requests after tier 1's return count too
        finally:
            predicts.stop()
    rows = pushed.all()
    down = rows[(rows[:, 0] >= killed_us) & (rows[:, 0] < back_us)]
    tiers, counts = np.unique(down[:, 2], return_counts=True)
    return {"plan": {k: v for k, v in asdict(plan).items() if k != "targets"},
            "requests": predicts.sent, "failed": predicts.failed, "failures": predicts.failures,
            "down_s": round((back_us - killed_us) / 1e6, 2),
            "restart_s": round((back_us - restarting_us) / 1e6, 2),
            "pushed_while_down": dict(zip(map(str, tiers.tolist()), counts.tolist(), strict=True)),
            "tier1_back_s": None if took is None else round(took, 3), "wait_s": WAIT_S}


def summary(loss: dict[str, Any]) -> str:
    """The phase's counts, one line."""
    p, back = loss["plan"], loss["tier1_back_s"]
    tiers = ", ".join(f"tier {t}: {n}" for t, n in sorted(loss["pushed_while_down"].items())) or "none"
    return (f"sidecar killed under load ({p['rate']:,.0f} upd/s, {p['stocks']} stocks, batch {p['batch']}): "
            f"{loss['requests']} requests, {loss['failed']} failed; pushed while down {loss['down_s']} s "
            f"({tiers}); tier 1 back "
            + (f"{back} s" if back is not None else f"not within {loss['wait_s']} s")
            + f" after its return (restart took {loss['restart_s']} s)")
