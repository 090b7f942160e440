"""`rtvol bench pipeline --sidecar-loss`'s verdicts: nothing lost (no failed request while the
sidecar is down) and tier 1 back within 5 s of its return, met or not, and whether the phase
ran at the target's load."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtvol.loadtest.bench.pipeline import verdicts
from rtvol.loadtest.bench.sidecar_loss import tier1_back_s

FAILED = "sidecar killed under load: failed requests"
BACK = "sidecar killed under load: tier 1 back after its return, s"


def _loss(failed: int, back_s: float | None, requests: int = 900, rate: float = 50_000,
          stocks: int = 500) -> dict[str, Any]:
    return {"plan": {"rate": rate, "stocks": stocks, "batch": 100}, "requests": requests, "failed": failed,
            "tier1_back_s": back_s, "wait_s": 10.0}


def _rows(loss: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in verdicts([], gpu=False, loss=loss)}


def test_no_failure_and_tier1_back_in_time_are_met_at_the_targets_load() -> None:
    rows = _rows(_loss(0, 1.2))
    assert set(rows) == {FAILED, BACK}
    assert rows[FAILED] == {"target": FAILED, "value": 0, "limit": 0, "met": True, "at_target_load": True}
    assert rows[BACK] == {"target": BACK, "value": 1.2, "limit": 5.0, "met": True, "at_target_load": True}


def test_a_failed_request_and_a_late_tier1_are_not_met() -> None:
    rows = _rows(_loss(3, 5.4))
    assert rows[FAILED]["value"] == 3 and not rows[FAILED]["met"]
    assert rows[BACK]["value"] == 5.4 and not rows[BACK]["met"]


def test_tier1_not_back_within_the_wait_stands_at_the_wait_and_no_request_is_not_met() -> None:
    rows = _rows(_loss(0, None, requests=0, rate=5_000, stocks=100))
    assert rows[BACK]["value"] == 10.0 and not rows[BACK]["met"]
    assert not rows[FAILED]["met"]  # nothing sent measures nothing
    assert not rows[FAILED]["at_target_load"] and not rows[BACK]["at_target_load"]


def test_no_phase_no_rows() -> None:
    assert verdicts([], gpu=False) == []


def test_tier1_is_back_when_the_last_stock_has_its_first() -> None:
    since = 1_000_000
    # (arrival µs, stock, tier): stock 11's first tier-1 signal comes last, 2.5 s after since
    rows = np.array([(since + 100_000, 10, 1), (since + 2_500_000, 11, 1), (since + 3_000_000, 10, 1),
                     (since + 4_000_000, 11, 1)], np.int64)
    assert tier1_back_s(rows, range(10, 12), since) == 2.5
    assert tier1_back_s(rows[rows[:, 1] == 10], range(10, 12), since) is None
