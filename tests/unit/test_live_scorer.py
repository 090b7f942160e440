"""The live scorer: signals of whole-bucket windows scored against the next bucket's RV, with the
steps stitched from the windows the Watch stream happens to deliver."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from rtvol.features import offline
from rtvol.features.spec import INDEX, N_FEATURES, STEPS
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.scorer import LiveScorer, repository_validation
from rtvol.services.gateway.signal import Signal

RNG = np.random.default_rng(7)
STEP_RV = RNG.uniform(1e-4, 2e-3, 20 * STEPS)  # one stock's wap1_rv per global step


def window(end: int) -> np.ndarray:
    """The window ending before global step ``end``, as the feature service would send it."""
    w = RNG.normal(size=(1, STEPS, N_FEATURES)).astype(np.float32)
    w[0, :, INDEX["wap1_rv"]] = STEP_RV[end - STEPS:end]
    return w


def hold(scorer: LiveScorer, *ends: int) -> int:
    return sum(scorer.settle(np.array([0]), window(end), np.array([end])) for end in ends)


def signal(end: int, rv: float, tier: int = 1, version: str = "3") -> Signal:
    return Signal(0, rv, model="m", version=version, tier=tier, window_end_step=end)


def realized(bucket: int) -> float:
    return float(offline.bucket_rv(window((bucket + 1) * STEPS))[0])


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts(version: str, role: str = "serving", tier: str = "1") -> tuple[float, float]:
    labels = {"model": "m", "version": version, "tier": tier, "role": role}
    return (value("rtvol_live_squared_percentage_error_total", **labels),
            value("rtvol_live_scored_signals_total", **labels))


def test_a_whole_bucket_signal_is_scored_against_the_next_buckets_rv() -> None:
    scorer = LiveScorer(1)
    hold(scorer, 2 * STEPS)
    assert scorer.record([signal(2 * STEPS, 1e-3, version="a")]) == 1
    assert counts("a") == (0.0, 0.0)  # bucket 2 not closed yet
    assert hold(scorer, 3 * STEPS - 1) == 0
    assert hold(scorer, 3 * STEPS) == 1
    truth = realized(2)
    assert counts("a") == (pytest.approx(((truth - 1e-3) / truth) ** 2), 1.0)


def test_steps_are_stitched_from_windows_that_skip_versions() -> None:
    scorer = LiveScorer(1)
    hold(scorer, 2 * STEPS)
    scorer.record([signal(2 * STEPS, 2e-3, version="b")])
    hold(scorer, 2 * STEPS + 30, 3 * STEPS + 20)  # the bucket's steps come from two windows
    truth = realized(2)
    assert counts("b") == (pytest.approx(((truth - 2e-3) / truth) ** 2), 1.0)


def test_a_gap_longer_than_a_window_drops_the_signal_and_counts_it() -> None:
    scorer = LiveScorer(1)
    missed = value("rtvol_live_unscored_signals_total", role="serving", reason="horizon_missed")
    hold(scorer, 2 * STEPS)
    scorer.record([signal(2 * STEPS, 1e-3, version="c")])
    hold(scorer, 2 * STEPS + 10, 3 * STEPS + 11)  # steps 110..110 never held
    assert counts("c") == (0.0, 0.0)
    assert value("rtvol_live_unscored_signals_total", role="serving", reason="horizon_missed") == missed + 1
    assert scorer.waiting[0] == {}


def test_each_signal_counts_once_per_tier_and_role_and_mid_bucket_ones_are_not_scored() -> None:
    scorer = LiveScorer(1)
    mid = value("rtvol_live_unscored_signals_total", role="serving", reason="mid_bucket")
    hold(scorer, 4 * STEPS)
    assert scorer.record([signal(4 * STEPS, 1e-3, version="d"), signal(4 * STEPS, 9e-3, version="d"),
                          signal(4 * STEPS, 1e-3, tier=2, version="d")]) == 2
    assert scorer.record([signal(4 * STEPS, 5e-4, version="d")], role="shadow") == 1
    assert scorer.record([signal(4 * STEPS + 1, 1e-3, version="d")]) == 0
    assert value("rtvol_live_unscored_signals_total", role="serving", reason="mid_bucket") == mid + 1
    hold(scorer, 5 * STEPS)
    truth = realized(4)
    assert counts("d") == (pytest.approx(((truth - 1e-3) / truth) ** 2), 1.0)  # the first one wins
    assert counts("d", tier="2")[1] == 1.0
    assert counts("d", role="shadow") == (pytest.approx(((truth - 5e-4) / truth) ** 2), 1.0)


def test_a_signal_computed_after_its_bucket_closed_is_scored_at_once() -> None:
    scorer = LiveScorer(1)
    hold(scorer, 6 * STEPS, 7 * STEPS)
    assert scorer.record([signal(6 * STEPS, 1e-3, version="e")]) == 1
    assert counts("e")[1] == 1.0
    assert scorer.waiting[0] == {}


def test_an_empty_bucket_is_not_scored_and_an_unknown_role_is_refused() -> None:
    scorer = LiveScorer(1)
    zero = value("rtvol_live_unscored_signals_total", role="serving", reason="zero_realized")
    quiet = np.zeros((1, STEPS, N_FEATURES), np.float32)
    scorer.settle(np.array([0]), quiet, np.array([8 * STEPS]))
    scorer.record([signal(8 * STEPS, 1e-3, version="f")])
    scorer.settle(np.array([0]), quiet, np.array([9 * STEPS]))
    assert counts("f") == (0.0, 0.0)
    assert value("rtvol_live_unscored_signals_total", role="serving", reason="zero_realized") == zero + 1
    with pytest.raises(ValueError, match="role"):
        scorer.record([signal(8 * STEPS, 1e-3)], role="canary")


def test_the_validation_figure_is_exported_once_per_version() -> None:
    asked: list[tuple[str, str]] = []

    def lookup(model: str, version: str) -> float:
        asked.append((model, version))
        return 0.31

    scorer = LiveScorer(1, lookup)
    hold(scorer, 10 * STEPS)
    scorer.record([signal(10 * STEPS, 1e-3, version="g"), signal(10 * STEPS, 1e-3, tier=2, version="g")])
    assert asked == [("m", "g")]
    assert value("rtvol_model_validation_rmspe", model="m", version="g") == 0.31


def test_held_windows_feed_the_scorer_with_their_end_steps_and_older_feeds_are_ignored() -> None:
    scorer = LiveScorer(2)
    mem = WindowMemory(2, scorer)
    windows = np.concatenate([window(3 * STEPS), window(3 * STEPS)])
    batch = fpb.WindowBatch(batch=1, stock_ids=[0, 1], windows=windows.tobytes(), version=[7, 7],
                            sequence=[1, 1], event_time_us=[0, 0], received_us=[0, 0])
    mem.hold(batch)  # a feature service without end_step: nothing learnt
    assert scorer.known_to.tolist() == [0, 0]
    batch.version[:] = [8, 8]
    batch.end_step.extend([3 * STEPS, 3 * STEPS])
    mem.hold(batch)
    assert mem.end_step.tolist() == [3 * STEPS] * 2 and scorer.known_to.tolist() == [3 * STEPS] * 2
    np.testing.assert_array_equal(scorer.step_rv[0, np.arange(2 * STEPS, 3 * STEPS) % (2 * STEPS)],
                                  STEP_RV[2 * STEPS:3 * STEPS].astype(np.float32))


def test_the_validation_figure_comes_from_the_repository_metadata(tmp_path: Path) -> None:
    for version, meta in ((1, {"training": {"best_val_rmspe": 0.31}}),
                          (2, {"ensemble": {"val_rmspe": {"ensemble": 0.29, "cnn": 0.3}},
                               "training": {"best_val_rmspe": 0.5}}),
                          (3, {"model": "no figure"})):
        folder = tmp_path / "m" / str(version)
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps(meta))
        (folder / "model.onnx").write_bytes(b"")
    lookup = repository_validation(tmp_path)
    assert [lookup("m", v) for v in ("1", "2", "3", "4", "")] == [0.31, 0.29, None, None, None]


def test_a_watch_batch_at_once_settles_as_window_by_window() -> None:
    """``settle`` takes a batch of distinct ascending stocks in one pass of array operations;
    any other order goes one window at a time: the same steps known, the same signals scored."""
    rng = np.random.default_rng(11)
    at_once, one_by_one = LiveScorer(6), LiveScorer(6)
    end = np.full(6, STEPS, np.int64)
    for _ in range(300):
        ids = np.flatnonzero(rng.random(6) < 0.6)
        if not len(ids):
            continue
        end[ids] += rng.choice([0, 1, 1, 1, 3, STEPS + 5], len(ids))  # same, next, a skip, a gap
        windows = rng.uniform(1e-4, 2e-3, (len(ids), STEPS, N_FEATURES)).astype(np.float32)
        for scorer in (at_once, one_by_one):
            scorer.record([Signal(int(i), 0.001, model="m", version="v", tier=1,
                                  window_end_step=int(end[i]) // STEPS * STEPS) for i in ids])
        got = at_once.settle(ids, windows, end[ids])
        want = one_by_one.settle(ids[::-1], windows[::-1], end[ids][::-1])
        assert got == want
        for name in ("known_from", "known_to", "step_rv", "oldest"):
            np.testing.assert_array_equal(getattr(at_once, name), getattr(one_by_one, name), err_msg=name)
        assert at_once.waiting == one_by_one.waiting
