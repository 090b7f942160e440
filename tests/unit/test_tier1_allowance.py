"""Tier 1's per-window allowance follows the host: raised to a multiple of what tier 2 computes
a window in here (timed at start on the real ONNX Runtime session), never below the configured
one, and the configured one alone when the factor is 0 (a factor that is not a finite,
non-negative number: tests/unit/test_settings_numbers.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.random_model import MODEL, export_random

from rtvol.services.gateway.tier2 import LocalModel, allowance_per_window_s


class Timed:
    """A tier 2 that computes a window in ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.seconds = window_s

    def window_s(self) -> float:
        return self.seconds


@pytest.mark.parametrize(("factor", "tier2_us", "want_us"), [
    (3.0, 30.0, 90.0),  # a slow CPU: the host's speed sets it
    (3.0, 1.0, 25.0),  # a fast one: never below what is configured
    (0.0, 30.0, 25.0),  # off
])
def test_the_allowance_is_the_larger_of_the_configured_and_tier2s(factor: float, tier2_us: float,
                                                                  want_us: float) -> None:
    got, timed = allowance_per_window_s(25e-6, factor, Timed(tier2_us / 1e6))  # type: ignore[arg-type]
    assert got == pytest.approx(want_us / 1e6)
    assert timed == (pytest.approx(tier2_us / 1e6) if factor else None)


def test_tier2_times_a_window_on_this_host(tmp_path: Path) -> None:
    export_random(tmp_path, seed=0)
    seconds = LocalModel(tmp_path, MODEL, None).window_s()
    # a window of this CNN is tens of µs on one CPU core; anything near 0 or 10 ms is not a timing
    assert math.isfinite(seconds) and 1e-7 < seconds < 1e-2
