"""The gateway's tier-1 budget settings: per deployment, and refused when they cannot hold."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rtvol.services.gateway.settings import GatewaySettings


def test_a_slower_tier_1_is_a_setting() -> None:
    # a Triton on a CPU (5-10 ms a call): the values docs/DEPLOY.md and values-triton.yaml give
    s = GatewaySettings(model_latency_budget_ms=15, model_timeout_ms=30, deadline_ms=50)
    assert (s.model_latency_budget_ms, s.model_timeout_ms) == (15, 30)
    GatewaySettings()  # the defaults hold


@pytest.mark.parametrize("values", [
    {"model_latency_budget_ms": 30},  # over the 20 ms timeout: the breaker would never count it
    {"model_latency_budget_ms": 50, "model_timeout_ms": 80},  # at the 50 ms deadline
    {"model_latency_budget_ms": 0},
], ids=["over-timeout", "at-deadline", "zero"])
def test_a_budget_that_cannot_trip_the_breaker_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="model_latency_budget_ms"):
        GatewaySettings(**values)  # type: ignore[arg-type]
