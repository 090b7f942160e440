"""Training and evaluation end to end on the tiny dataset (a few epochs)."""

import json
from pathlib import Path

import numpy as np

from rtvol import cli
from rtvol.training import dataset, train


def test_split_never_shares_a_time_id(tiny_data: Path) -> None:
    parts = train.split(dataset.load(tiny_data, progress=False), train.TrainConfig())
    ids = {k: set(v.time_id.tolist()) for k, v in parts.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert max(ids["train"]) < min(ids["val"]) <= max(ids["val"]) < min(ids["test"])


def test_evaluate_command_writes_report_and_plot(tiny_data: Path, tiny_repo: Path,
                                                 tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report.json"
    assert cli.main(["evaluate", "--data", str(tiny_data), "--repo", str(tiny_repo),
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["rmspe"]) == {"naive", "har", "lightgbm", "cnn", "oracle"}
    assert all(np.isfinite(v) and v > 0 for v in report["rmspe"].values())
    assert set(report["direction_accuracy"]) >= {"cnn", "majority"}
    assert report["params"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "lightgbm" in printed and "oracle" in printed


def test_training_is_reproducible(tiny_data: Path, tmp_path: Path) -> None:
    data = dataset.load(tiny_data, progress=False)
    parts = train.split(data, train.TrainConfig())
    cfg = train.TrainConfig(epochs=2)
    a, _ = train.train_cnn(parts["train"], parts["val"], cfg, progress=False)
    b, _ = train.train_cnn(parts["train"], parts["val"], cfg, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), k
