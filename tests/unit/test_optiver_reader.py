"""The Optiver reader on generated files and on broken ones (clear errors)."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rtvol import schema
from rtvol.training import dataset, optiver


def test_reads_generated_layout(tiny_data: Path) -> None:
    assert optiver.stock_ids(tiny_data) == [0, 1, 2, 3]
    book = optiver.read_book(tiny_data, 2)
    assert book.column_names == list(schema.BOOK_COLUMNS)
    seconds = book.column("seconds_in_bucket").to_numpy()
    assert seconds.min() == 0 and seconds.max() <= 599
    trade = optiver.read_trade(tiny_data, 2, columns=["time_id", "seconds_in_bucket", "size"])
    assert trade.column_names == ["time_id", "seconds_in_bucket", "size"]  # projection
    targets = optiver.read_targets(tiny_data)
    assert targets.num_rows == 4 * 40 and np.all(targets.column("target").to_numpy() > 0)


def _copy(tiny_data: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "data"
    shutil.copytree(tiny_data, dest)
    return dest


def _rewrite(path: Path, table: pa.Table) -> None:
    for f in path.glob("*.parquet"):
        f.unlink()
    pq.write_table(table, path / "part-0.parquet")


def test_missing_column_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    part = data / "book_train.parquet" / "stock_id=1"
    _rewrite(part, optiver.read_book(data, 1).drop_columns(["ask_size2"]))
    with pytest.raises(optiver.DataError, match=r"part-0\.parquet.*missing column 'ask_size2'"):
        optiver.read_book(data, 1)


def test_wrong_type_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    part = data / "trade_train.parquet" / "stock_id=0"
    table = optiver.read_trade(data, 0)
    bad = table.set_column(table.schema.get_field_index("price"), "price",
                           pa.array(["x"] * table.num_rows))
    _rewrite(part, bad)
    with pytest.raises(optiver.DataError, match=r"stock_id=0/part-0\.parquet: column 'price' has type"):
        optiver.read_trade(data, 0)


def test_missing_files_are_named(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    (data / "train.csv").unlink()
    with pytest.raises(optiver.DataError, match=r"train\.csv: missing file"):
        optiver.read_targets(data)
    shutil.rmtree(data / "trade_train.parquet" / "stock_id=3")
    with pytest.raises(optiver.DataError, match=r"stock_id=3: missing partition for stock 3"):
        optiver.read_trade(data, 3)
    with pytest.raises(optiver.DataError, match=r"book_test\.parquet: missing"):
        optiver.stock_ids(data, "test")


def test_bad_csv_column(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    (data / "train.csv").write_text("stock_id,time_id,tgt\n0,0,0.1\n")
    with pytest.raises(optiver.DataError, match=r"train\.csv: missing column 'target'"):
        optiver.read_targets(data)


def test_corrupt_parquet(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    part = data / "book_train.parquet" / "stock_id=0"
    for f in part.glob("*.parquet"):
        f.write_bytes(b"not parquet")
    with pytest.raises(optiver.DataError, match="not a readable parquet file"):
        optiver.read_book(data, 0)


def test_windows_shapes_and_finiteness(tiny_data: Path) -> None:
    d = dataset.load(tiny_data, progress=False)
    assert d.windows.shape == (160, 50, 12) and d.windows.dtype == np.float32
    assert np.isfinite(d.windows).all()
    assert d.oracle is not None and d.next_return is not None
    assert set(np.unique(d.direction())) <= {0, 1, 2}
