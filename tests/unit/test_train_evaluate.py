"""Training and evaluation end to end on the tiny dataset (a few epochs)."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from rtvol import cli, repository
from rtvol.training import dataset, ensemble, mlp, train


def test_split_never_shares_a_time_id(tiny_data: Path) -> None:
    data = dataset.load(tiny_data, progress=False)
    parts = train.split(data, train.TrainConfig())
    assert list(parts) == list(train.PARTS)
    ids = [sorted(set(v.time_id.tolist())) for v in parts.values()]
    assert all(ids)
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(ids))  # in time order
    assert sum(len(v) for v in parts.values()) == len(data)


def test_split_refuses_too_few_time_ids_and_a_bad_stop_fraction(tiny_data: Path) -> None:
    data = dataset.load(tiny_data, progress=False)
    few = data.subset(data.time_id < np.unique(data.time_id)[3])  # 3 time_ids
    with pytest.raises(ValueError, match=r"need at least 4 time_ids to split .*1 to early-stop, "
                                         r"1 to fit the ensemble's weights, 1 to test"):
        train.split(few, train.TrainConfig())
    parts = train.split(data.subset(data.time_id < np.unique(data.time_id)[4]), train.TrainConfig())
    assert [len(np.unique(p.time_id)) for p in parts.values()] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="stop_fraction must be in"):
        train.split(data, train.TrainConfig(stop_fraction=1.0))


def test_evaluate_command_writes_report_and_plot(tiny_data: Path, tiny_repo: Path,
                                                 tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report.json"
    assert cli.main(["evaluate", "--data", str(tiny_data), "--repo", str(tiny_repo),
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["rmspe"]) == {"naive", "har", "lightgbm", "mlp", "cnn", "ensemble",
                                    "oracle"}
    assert all(np.isfinite(v) and v > 0 for v in report["rmspe"].values())
    for model, iv in report["intervals"]["rmspe"].items():
        assert iv["low"] <= report["rmspe"][model] <= iv["high"], model
    assert report["intervals"]["time_ids"] == len(set(range(*report["time_ids"]))) + 1
    assert out.with_name("report_intervals.png").stat().st_size > 10_000
    assert set(report["direction_accuracy"]) >= {"cnn", "majority"}
    assert report["params"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "lightgbm" in printed and "oracle" in printed and "cnn - lightgbm" in printed
    assert "mlp - lightgbm" in printed and "ensemble - mlp" in printed


def test_evaluate_over_seeds_generates_trains_and_summarises(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out, work = tmp_path / "seeds.json", tmp_path / "work"
    args = ["evaluate", "--seeds", "3,4", "--work", str(work), "--stocks", "3",
            "--time-ids", "30", "--epochs", "1", "--bootstrap", "100", "--out", str(out)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["per_seed"]) == {"3", "4"}
    targets = [(work / f"seed{s}" / "data" / "train.csv").read_text() for s in (3, 4)]
    assert targets[0] != targets[1]  # a market per seed
    summary = result["summary"]
    for model in ("lightgbm", "cnn", "ensemble"):
        per_seed = [result["per_seed"][s]["rmspe"][model] for s in ("3", "4")]
        assert summary["rmspe"][model]["mean"] == pytest.approx(np.mean(per_seed))
    assert summary["difference"]["cnn - lightgbm"]["seeds"] == 2
    assert out.with_name("seeds_intervals.png").stat().st_size > 10_000
    first = capsys.readouterr().out
    assert "seed 3" in first and "mean ± sd" in first and "training" in first
    assert cli.main(args) == 0  # the second time reuses the data and the models
    assert "training" not in capsys.readouterr().out
    assert json.loads(out.read_text())["per_seed"] == result["per_seed"]
    repo = work / "seed3" / "models"
    version = ensemble.served_by(repo, repository.DEFAULT_MODEL, 1, ensemble.BUILD)
    meta_file = repository.version_dir(repo, ensemble.MODEL, version) / repository.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    meta["ensemble"]["build"] = ensemble.BUILD - 1  # as an older build wrote it
    meta_file.write_text(json.dumps(meta))
    assert cli.main(args) == 0
    assert "seed 3: building the ensemble" in capsys.readouterr().out
    assert ensemble.served_by(repo, repository.DEFAULT_MODEL, 1, ensemble.BUILD) == version + 1
    # a version trained before the MLP member existed is trained again, not reused
    (repository.version_dir(repo, repository.DEFAULT_MODEL, 1) / mlp.MLP_FILE).unlink()
    assert cli.main(args) == 0
    assert "seed 3: training" in capsys.readouterr().out
    assert repository.versions(repo, repository.DEFAULT_MODEL) == [1, 2]


def test_evaluate_refuses_bad_seed_arguments(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["evaluate", "--seeds", "1", "--work", str(tmp_path)]) == 2
    assert "at least two distinct seeds" in capsys.readouterr().err
    assert cli.main(["evaluate", "--out", str(tmp_path / "r.json")]) == 2
    assert "--data and --repo" in capsys.readouterr().err


def test_training_is_reproducible(tiny_data: Path, tmp_path: Path) -> None:
    data = dataset.load(tiny_data, progress=False)
    parts = train.split(data, train.TrainConfig())
    cfg = train.TrainConfig(epochs=2)
    a, _ = train.train_cnn(parts["train"], parts["stop"], cfg, progress=False)
    b, _ = train.train_cnn(parts["train"], parts["stop"], cfg, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), k
