"""`rtvol data from-ticklog`: a real feature service logs a replay through its fan-out, the
command converts the log, and `rtvol train` trains on the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import feed, procs

from rtvol import cli
from rtvol.loadtest.feed import load
from rtvol.repository import versions
from rtvol.services.feature.ticklog import read_ticklog
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


def test_a_log_left_open_by_a_crash_is_recovered_at_restart_and_converts(tiny_data: Path, tmp_path: Path,
                                                                          capsys) -> None:  # type: ignore[no-untyped-def]
    ticks, out = tmp_path / "ticks", tmp_path / "live"
    stocks = optiver.stock_ids(tiny_data)
    proc, target = procs.feature_service(tmp_path, "", max(stocks) + 1, "--ticklog-dir", str(ticks),
                                         "--ticklog-fsync-interval-s", "0.05")
    try:
        thread = feed.in_background(target, tiny_data, range(40), seconds=8)
        assert procs.wait_until(lambda: sum(p.stat().st_size for p in ticks.glob("*.part")) > 100_000, 30)
        proc.kill()  # SIGKILL mid-feed: the open file stays .arrow.part
        thread.join(30)
        assert [p.suffix for p in ticks.iterdir()] == [".part"]
        proc.restart()
        assert [p.suffix for p in ticks.iterdir()] == [".arrow"]  # recovered at start
    finally:
        assert proc.stop() == 0, proc.tail()

    logged = read_ticklog(ticks)
    assert 0 < len(logged) < len(load(tiny_data, range(40))[1])
    for s in stocks:  # what was logged is each stock's first updates, in order, none lost in between
        np.testing.assert_array_equal(np.sort(logged.seq[logged.stock_id == s]),
                                      np.arange(np.count_nonzero(logged.stock_id == s)))
    assert cli.main(["data", "from-ticklog", "--ticklog", str(ticks), "--out", str(out)]) == 0
    assert f"{len(stocks)} stocks in Optiver's layout" in capsys.readouterr().out
    assert optiver.stock_ids(out) == stocks


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
