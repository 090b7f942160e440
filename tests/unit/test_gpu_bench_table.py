"""`rtvol bench gpu`'s table judges each figure against issue 13's target, a skipped step as n/a."""

from typing import Any

import pytest

from rtvol.loadtest.bench import gpu


def _verdict(features: dict[str, Any]) -> str:
    steps = ["parity", "compile", "replay", "ready_artifact", "ready_warm", "ready_no_artifact", "ingest",
             "gateway", *(p[0] for p in gpu.PIPELINES)]
    report: dict[str, Any] = {"gpu": "test", "torch": "test", "date": "test", "model": {},
                              "perf_analyzer": {}, "features": features,
                              **{s: {"skipped": True} for s in steps}}
    report["figures"] = gpu.figures(report)
    line = next(x for x in gpu.table(report).splitlines() if x.startswith("offline_x_numpy"))
    return line.split()[-1]


@pytest.mark.parametrize(("features", "verdict"), [
    ({"offline_ratio": 15.8, "snapshot_ratio": 7.6}, "MISSED"),
    ({"offline_ratio": 50.0}, "met"),
    ({"skipped": True}, "n/a"),  # the step not chosen, or no GPU (features_gpu's own skip)
])
def test_offline_windows_are_judged_against_fifty_times_numpy(features: dict[str, Any], verdict: str) -> None:
    assert _verdict(features) == verdict
