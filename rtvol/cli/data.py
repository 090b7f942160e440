"""`rtvol data`: synthetic data and the tick log in Optiver's layout."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtvol.cli.common import Commands

from rtvol.cli.common import CommandError, add


def _synth(a: argparse.Namespace) -> None:
    from tqdm import tqdm

    from rtvol.training import synth

    cfg = synth.SynthConfig(stocks=a.stocks, time_ids=a.time_ids, seed=a.seed)
    if cfg.stocks < 1 or cfg.time_ids < 3:
        raise CommandError("--stocks must be >= 1 and --time-ids >= 3")
    chunks = -(-cfg.time_ids // cfg.chunk_time_ids)
    started = time.time()
    with tqdm(total=chunks, desc="synth", unit="chunk") as bar:
        gen = synth.generate(cfg, progress=lambda _: bar.update())
    synth.write(gen, a.out)
    rows = sum(t.num_rows for t in gen.book.values())
    print(f"wrote {a.out}: {cfg.stocks} stocks x {cfg.time_ids} time_ids, {rows:,} book rows, "
          f"seed {cfg.seed} ({time.time() - started:.0f} s)")


def _from_ticklog(a: argparse.Namespace) -> None:
    # by name, like `serve`: the shared library does not import services
    ticklog = importlib.import_module("rtvol.services.feature.ticklog")
    try:
        stocks = ticklog.to_optiver(a.ticklog, a.out)
    except ticklog.TickLogError as e:
        raise CommandError(str(e)) from e
    print(f"wrote {a.out}: {stocks} stocks in Optiver's layout (rtvol train --data {a.out})")


def data_command(sub: Commands) -> None:
    tools = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True,
                                                                     metavar="TOOL")
    synth = tools.add_parser("synth", help="write a synthetic dataset in Optiver's layout",
                             description="Generate book/trade parquet partitions, train.csv and "
                                         "oracle.csv. Deterministic by --seed.")
    add(synth, "out", "output directory", type=Path, env="data")
    add(synth, "stocks", "number of stocks", "40", int)
    add(synth, "time-ids", "number of 10-minute buckets per stock", "600", int)
    add(synth, "seed", "random seed", "0", int)
    synth.set_defaults(run=_synth)
    ft = tools.add_parser(
        "from-ticklog", help="turn the feature service's tick log into training data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a tick log (the ticks-*.arrow files the feature service writes with\n"
                    "--ticklog-dir) into Optiver's layout: book/trade parquet per stock and train.csv,\n"
                    "which `rtvol train --data OUT` reads.",
        epilog="Only complete files are read: a file still being written (.arrow.part) is skipped,\n"
               "so stop the feature service (it closes its file) or wait for it to rotate. Each\n"
               "bucket's target is the realized volatility of the next bucket, so a stock's last\n"
               "logged bucket gets no row in train.csv.\n\nExample:\n"
               "  rtvol serve feature --ticklog-dir ticks ...\n"
               "  rtvol data from-ticklog --ticklog ticks --out data/live\n"
               "  rtvol train --data data/live --repo models")
    add(ft, "ticklog", "tick-log directory (the feature service's --ticklog-dir)", type=Path,
         env="ticklog-dir")
    add(ft, "out", "output directory (Optiver's layout)", type=Path, env="data")
    ft.set_defaults(run=_from_ticklog)
