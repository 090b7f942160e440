"""Every service refuses a number that cannot be meant (NaN, inf, a negative duration, rate or
bound) with one line naming the setting and exit status 2, before it starts anything."""

from __future__ import annotations

import pytest

from rtvol import config
from rtvol.config import ServiceSettings
from rtvol.services.feature.settings import FeatureSettings
from rtvol.services.gateway.settings import GatewaySettings
from rtvol.services.model.settings import ModelSettings

SERVICES = [GatewaySettings, FeatureSettings, ModelSettings]


@pytest.mark.parametrize("cls", SERVICES)
def test_the_defaults_hold(cls: type[ServiceSettings]) -> None:
    config.load(cls, [], "rtvol serve unit")


@pytest.mark.parametrize(("cls", "flag", "said"), [
    (GatewaySettings, "--store-timeout-ms=-5", "store_timeout_ms (-5) must not be negative"),
    (GatewaySettings, "--model-latency-budget-per-window-us=nan",
     "model_latency_budget_per_window_us: Input should be a finite number (got 'nan')"),
    (GatewaySettings, "--model-latency-budget-tier2-factor=inf", "model_latency_budget_tier2_factor"),
    (GatewaySettings, "--model-latency-budget-tier2-factor=nan", "model_latency_budget_tier2_factor"),
    (GatewaySettings, "--model-latency-budget-tier2-factor=-1", "model_latency_budget_tier2_factor (-1)"),
    (FeatureSettings, "--flush-interval-s=-0.5", "flush_interval_s (-0.5) must not be negative"),
    (FeatureSettings, "--watch-ack-timeout-s=1e999", "watch_ack_timeout_s: Input should be a finite number"),
    (ModelSettings, "--poll-seconds=-1", "poll_seconds (-1) must not be negative"),
    (GatewaySettings, "--model-latency-budget-ms=30", "model_latency_budget_ms (30) must be above 0"),
])
def test_a_number_that_cannot_be_meant_is_refused_naming_it(cls: type[ServiceSettings], flag: str, said: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        config.load(cls, [flag], "rtvol serve unit")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rtvol serve unit: ") and said in err and "Traceback" not in err
