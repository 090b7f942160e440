"""Model names and version labels longer than a slot of the workers' shared signal table
(services/gateway/labels.py) are refused once, when a version is loaded or first answers:
the sidecar's (tier 2 answers instead) and tier 2's (the loaded version stays); a slot is
then written without a check."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from rtvol.services.gateway import labels, versions
from rtvol.services.gateway.breaker import Breaker
from rtvol.services.gateway.tier1 import Tier1, UpstreamError
from rtvol.version_policy import Targets

LONG_VERSION = "1" + "0" * labels.VERSION_BYTES  # one byte more than a slot holds


def _refused(model: str) -> float:
    return REGISTRY.get_sample_value("rtvol_gateway_model_refused_total",
                                     {"model": model, "reason": "label_too_long"}) or 0.0


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_name_or_version_longer_than_a_slot_is_too_long() -> None:
    assert labels.too_long("m" * labels.MODEL_BYTES, "9" * labels.VERSION_BYTES) == ""
    assert "model name" in labels.too_long("é" * (labels.MODEL_BYTES // 2 + 1), "1")  # bytes, not characters
    assert "version" in labels.too_long("rtvol_cnn", LONG_VERSION)


@dataclass
class Sidecar:
    model: str
    version: str

    async def infer(self, windows: np.ndarray, version: str = "") -> tuple[dict[str, np.ndarray], str, float]:
        return {"rv": windows[:, 0, :1].copy()}, self.version, 0.001


def test_a_sidecar_answering_a_version_too_long_is_refused_once_and_tier_2_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    sidecar = Sidecar("labels_unit_sidecar", "1")
    t1 = Tier1(sidecar, Breaker("labels_unit", window=100, min_calls=100), timeout_s=1.0)  # type: ignore[arg-type]
    windows = np.zeros((2, 50, 12), np.float32)

    async def run() -> None:
        await t1.batch(windows)
        assert t1.version == "1"
        sidecar.version = LONG_VERSION
        for _ in range(3):
            with pytest.raises(UpstreamError, match="refused"):  # the predictor falls back to tier 2
                await t1.batch(windows)
        assert t1.version == "1"
        sidecar.version = "2"
        await t1.batch(windows)
        assert t1.version == "2"

    asyncio.run(run())
    assert _refused(sidecar.model) == 1 and len(_errors(caplog)) == 1
    assert "from the sidecar" in _errors(caplog)[0]


def test_a_repository_version_too_long_is_refused_once_and_the_loaded_one_stays(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    local = SimpleNamespace(name="labels_unit_repo", version="1")
    predictor = SimpleNamespace(tiers=SimpleNamespace(local=local))
    follower = versions.VersionFollower("repo", predictor, None, 1.0, 1)  # type: ignore[arg-type]
    monkeypatch.setattr(versions.REFUSALS, "follow", lambda *_: Targets(int(LONG_VERSION), None))

    def load(*_: object) -> None:
        raise AssertionError("a refused version is never loaded")

    monkeypatch.setattr(versions, "LocalModel", load)
    for _ in range(3):  # every poll
        asyncio.run(follower.check())
    assert predictor.tiers.local is local
    assert _refused(local.name) == 1 and len(_errors(caplog)) == 1
