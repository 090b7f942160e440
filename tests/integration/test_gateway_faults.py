"""Faults the gateway must survive, with real processes: the sidecar killed, the sidecar
slow, Redis stopped. A client sends a steady stream of requests through each fault."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from helpers import feed, metrics, procs

pytestmark = pytest.mark.integration
STOCKS = 8
DEADLINE_S = 0.3
# the gateway's own request histogram bucket just above the deadline: a request it held past
# this kept tier 1 waiting beyond the deadline. Timed in the gateway, not by the client, whose
# thread on a shared two-core machine can be scheduled late without the gateway being slow.
PAST_DEADLINE = "0.5"
HUNG_S = 2.0  # the client's own bound: an answer this late is a hang, not scheduling


@dataclass
class Stack:
    redis: procs.Proc
    feature: procs.Proc
    feature_url: str
    sidecar: procs.Proc
    gateway: procs.Proc
    base: str
    logs: Path


@pytest.fixture(scope="module")
def stack(tiny_repo: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("gateway_faults")
    started: list[procs.Proc] = []
    try:
        redis = procs.redis(logs)
        started.append(redis)
        feature, feature_url = procs.feature_service(logs, redis.url, STOCKS)  # type: ignore[attr-defined]
        started.append(feature)
        sidecar, model_url = procs.sidecar(logs, tiny_repo)
        started.append(sidecar)
        gw, base, _ = procs.gateway(
            logs, tiny_repo, "--redis-url", redis.url, "--model-url", model_url,  # type: ignore[attr-defined]
            "--stocks", str(STOCKS), "--deadline-ms", str(DEADLINE_S * 1000), "--model-timeout-ms", "100",
            "--model-latency-budget-ms", "50", "--breaker-open-s", "0.3", "--store-timeout-ms", "50")
        started.append(gw)
        feed.replay(feature_url, tiny_data, range(0, 3))
        # one request, so the gateway's request histogram has a series before the first test reads it
        httpx.post(base + "/v1/predict", json={"stock_ids": [0]}, timeout=5)
        yield Stack(redis, feature, feature_url, sidecar, gw, base, logs)
    finally:
        procs.stop_all(started)


@dataclass
class Load:
    """Requests every 10 ms from a thread; records each answer's tier or the failure."""

    base: str
    tiers: list[tuple[float, int, bool]] = field(default_factory=list)  # (time, tier, stale)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    reply = client.post("/v1/predict", json={"stock_ids": [0, 1]})
                    body = reply.json()
                    if reply.status_code != 200 or any("error" in s for s in body["signals"]):
                        self.failures.append(reply.text)
                    else:
                        tier = max(s["tier"] for s in body["signals"])
                        stale = any(s["stale"] for s in body["signals"])
                        self.tiers.append((time.monotonic(), tier, stale))
                except (httpx.HTTPError, ValueError) as e:
                    self.failures.append(repr(e))
                self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)
                time.sleep(0.01)

    def __enter__(self) -> Load:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def seen(self, tier: int, since: float, stale: bool | None = None) -> bool:
        return any(t >= since and tr == tier and (stale is None or s == stale) for t, tr, s in self.tiers)

    def wait_for(self, tier: int, since: float, timeout_s: float = 20, stale: bool | None = None) -> None:
        assert procs.wait_until(lambda: self.seen(tier, since, stale), timeout_s), (
            f"no tier-{tier} answer in {timeout_s} s: {Counter(t for _, t, _ in self.tiers)}")


def held_past_deadline(stack: Stack) -> float:
    return metrics.count_above(stack.base, "rtvol_gateway_request_seconds", PAST_DEADLINE)


def test_sidecar_killed_answers_switch_to_tier2_and_come_back(stack: Stack) -> None:
    held_before = held_past_deadline(stack)
    with Load(stack.base) as load:
        load.wait_for(1, 0)
        killed = time.monotonic()
        stack.sidecar.kill()
        load.wait_for(2, killed)
        time.sleep(0.5)  # a while on tier 2, breaker open
        stack.sidecar.restart()
        load.wait_for(1, time.monotonic())
    assert not load.failures, load.failures[:3]
    assert held_past_deadline(stack) == held_before
    assert load.slowest_s < HUNG_S


def test_slow_sidecar_opens_the_breaker_and_tier2_answers_in_time(stack: Stack) -> None:
    stack.sidecar.stop()
    stack.sidecar.cmd += ["--debug-delay-ms", "400"]
    stack.sidecar.restart()
    try:
        held_before = held_past_deadline(stack)
        with Load(stack.base) as load:
            start = time.monotonic()
            load.wait_for(2, start)
            time.sleep(1.0)
        opened = 'rtvol_gateway_breaker_transitions_total{to="open",upstream="sidecar"}'
        assert opened in metrics.scrape(stack.base)
        assert not load.failures, load.failures[:3]
        assert held_past_deadline(stack) == held_before  # tier 1 never held a request past its deadline
        assert load.slowest_s < HUNG_S
        assert not load.seen(1, start + 0.5)  # the slow sidecar answered nothing in time
    finally:
        stack.sidecar.stop()
        stack.sidecar.cmd = stack.sidecar.cmd[:-2]
        stack.sidecar.restart()


def test_redis_stopped_gateway_answers_stale_then_recovers(stack: Stack, tiny_data: Path) -> None:
    with Load(stack.base) as load:
        load.wait_for(1, 0, stale=False)
        stopped = time.monotonic()
        stack.redis.kill()
        load.wait_for(1, stopped, stale=True)  # the last signals it computed, flagged stale
        time.sleep(0.5)
        stack.redis.restart()  # empty: no persistence, so the features must come again
        back = time.monotonic()
        assert procs.wait_until(lambda: _feed(stack, tiny_data) or load.seen(1, back, stale=False), 30, 0.3)
    assert not load.failures, load.failures[:3]
    assert httpx.get(stack.base + "/livez").status_code == 200


_buckets = iter(range(3, 40))


def _feed(stack: Stack, data: Path) -> bool:
    try:
        b = next(_buckets)
        feed.replay(stack.feature_url, data, range(b, b + 1))
    except Exception:  # the feature service reconnects to Redis on its own time
        pass
    return False
