"""The open-loop schedule split over generator processes: parts that add up to the one-process
schedule, and results merged exactly (samples, not averaged percentiles)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from rtvol.loadtest import fanout, openloop, report


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_the_parts_of_a_schedule_are_the_one_process_schedule(parts: int) -> None:
    whole = list(openloop.schedule(1000, 2.5))
    split = [list(openloop.schedule(1000, 2.5, k, parts)) for k in range(parts)]
    assert sorted(i for s in split for i in s) == whole == list(range(2500))
    # interleaved: consecutive requests go to different parts, so each part's rate is rate / parts
    assert all(i % parts == k for k, s in enumerate(split) for i in s)
    assert max(len(s) for s in split) - min(len(s) for s in split) <= 1


def test_a_part_outside_the_split_is_refused() -> None:
    with pytest.raises(ValueError, match="part 2 of 2"):
        openloop.schedule(100, 1, 2, 2)


def test_merged_percentiles_are_those_of_all_samples() -> None:
    rng = random.Random(5)
    fast = openloop.Result(100, 1, elapsed_s=1.0, scheduled=900, latency_s=[rng.uniform(0.001, 0.002)
                                                                            for _ in range(895)],
                           errors=Counter(timeout=5), generator_cpu_s=[0.2])
    slow = openloop.Result(100, 1, elapsed_s=1.1, scheduled=100, latency_s=[rng.uniform(0.01, 0.05)
                                                                            for _ in range(100)],
                           errors=Counter(), generator_cpu_s=[0.3])
    fast.intended_s, slow.intended_s = [0.0] * fast.ok, [0.0] * slow.ok
    fast.send_late_s, slow.send_late_s = [0.0001] * 900, [0.01] * 100  # the slow part sent late
    merged = openloop.merge([fast, slow])
    assert (merged.scheduled, merged.ok, merged.elapsed_s) == (1000, 995, 1.1)
    assert merged.errors == Counter(timeout=5)
    everything = openloop.Result(100, 1, latency_s=fast.latency_s + slow.latency_s)
    want, got = report.histogram(everything), report.histogram(merged)
    for q in (50.0, 99.0, 99.9):
        assert got.get_value_at_percentile(q) == want.get_value_at_percentile(q)
    # an average of the parts' p50s (fast ~1.5 ms, slow ~30 ms) would be ~16 ms; with 9 samples in
    # 10 fast, the true p50 is under 2 ms
    assert got.get_value_at_percentile(50.0) < 3_000
    assert report.cpu_report(merged) == {"processes": 2, "cpu_us_per_request": 500.0,
                                         "send_late_ms": {"p99": 10.0, "p99.9": 10.0},
                                         "busiest_process_cores": 0.27, "suspect": False}


def test_a_generator_near_a_core_is_flagged() -> None:
    busy = openloop.Result(100, 1, elapsed_s=1.0, scheduled=100, generator_cpu_s=[0.9])
    s = report.summary(busy, "grpc://x:1")
    assert s["generator"]["suspect"]
    assert "WARNING" in report.line(s)
    assert "WARNING" not in report.line(report.summary(openloop.Result(100, 1, elapsed_s=1.0,
                                                                       generator_cpu_s=[0.1]), "x"))


def test_parts_sharing_a_start_send_the_schedule_on_time() -> None:
    """Two parts in one loop from one start: every request sent once, at its intended time, with
    the stocks the one-process run would have asked for."""
    sent: list[tuple[int, float]] = []

    async def both() -> list[openloop.Result]:
        t0 = time.perf_counter() + 0.05

        def sender() -> openloop.Send:
            async def send(ids: list[int]) -> None:
                sent.append((ids[0], time.perf_counter() - t0))
            return send
        return list(await asyncio.gather(*(openloop.run(sender(), 400, 0.5, list(range(10)), part=k, parts=2,
                                                        t0=t0) for k in range(2))))

    parts = asyncio.run(both())
    merged = openloop.merge(parts)
    assert [p.scheduled for p in parts] == [100, 100] and merged.ok == 200 and not merged.errors
    assert sorted(merged.intended_s) == pytest.approx([i / 400 for i in range(200)])
    assert Counter(stock for stock, _ in sent) == Counter(i % 10 for i in range(200))
    assert min(at for _, at in sent) >= 0  # nothing before the shared start
    assert len(merged.generator_cpu_s) == 2


def test_processes_setting() -> None:
    assert fanout.processes_arg("3") == 3
    assert fanout.processes_arg("auto") >= 1
    with pytest.raises(ValueError):
        fanout.processes_arg("0")
    assert (fanout.share(512, 3), fanout.share(4, 8)) == (171, 1)


def test_processes_count_what_every_one_of_them_scheduled_and_met() -> None:
    """Two spawned generator processes against a closed port: every request is scheduled once
    and fails, and the errors of both are summed."""
    from rtvol.loadtest.run import Plan
    from rtvol.localproc import free_port

    plan = Plan(f"grpc://127.0.0.1:{free_port()}", 0.5, [0, 1], timeout_s=0.5, processes=2)
    res = fanout.run(plan, 40, plan.processes)
    assert (res.scheduled, res.ok, sum(res.errors.values())) == (20, 0, 20), res.errors
    assert len(res.generator_cpu_s) == 2


def test_a_process_that_fails_fails_the_run_with_its_error() -> None:
    from rtvol.loadtest.run import Plan

    with pytest.raises(RuntimeError, match=r"process [01] failed: ValueError: target 'tcp://x:1'"):
        fanout.run(Plan("tcp://x:1", 0.5, [0]), 10, 2)
