"""`rtvol data from-ticklog`: a real feature service logs a replay through its fan-out, the
command converts the log, and `rtvol train` trains on the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import feed, procs

from rtvol import cli
from rtvol.repository import versions
from rtvol.training import dataset, optiver

pytestmark = pytest.mark.integration


def test_a_logged_replay_converts_and_trains(tiny_data: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    ticks, out, repo = tmp_path / "ticks", tmp_path / "live", tmp_path / "models"
    stocks = optiver.stock_ids(tiny_data)
    proc, target = procs.feature_service(tmp_path, "", max(stocks) + 1, "--ticklog-dir", str(ticks))
    try:
        assert feed.replay(target, tiny_data, range(40)) == stocks
    finally:
        assert proc.stop() == 0, proc.tail()  # the drain closes the open tick-log file

    assert cli.main(["data", "from-ticklog", "--ticklog", str(ticks), "--out", str(out)]) == 0
    assert f"{len(stocks)} stocks in Optiver's layout" in capsys.readouterr().out
    assert optiver.stock_ids(out) == stocks
    for s in stocks:  # every update went through the service's fan-out into the log
        np.testing.assert_array_equal(dataset.stock_windows(out, s, np.arange(40)),
                                      dataset.stock_windows(tiny_data, s, np.arange(40)))
    assert cli.main(["train", "--data", str(out), "--repo", str(repo), "--epochs", "1"]) == 0
    assert versions(repo, "rtvol_cnn") == [1]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: None, "no such directory"),
    (lambda d: d.mkdir(), "no complete tick-log files"),
    (lambda d: (d.mkdir(), (d / "ticks-000000001.arrow.part").write_bytes(b"")),
     "1 file(s) still being written (.arrow.part): stop the feature service"),
    (lambda d: (d.mkdir(), (d / "ticks-000000001.arrow").write_bytes(b"not arrow")),
     "unreadable tick-log file"),
])
def test_a_missing_empty_or_unreadable_log_is_a_clear_error(tmp_path: Path, capsys, setup,  # type: ignore[no-untyped-def]
                                                            message: str) -> None:
    setup(tmp_path / "ticks")
    code = cli.main(["data", "from-ticklog", "--ticklog", str(tmp_path / "ticks"),
                     "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rtvol: error: --ticklog {tmp_path / 'ticks'}: ") and message in err
    assert not (tmp_path / "o").exists()
