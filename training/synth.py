"""Synthetic market data in Optiver's Realized Volatility layout.

The generating process (all volatilities are per second, in logs):

* Each time_id is a feature bucket (written) followed by a target bucket (hidden; its
  WAP RV is ``target``). Time_ids follow each other, so latent state persists:
  ``h[i,t] = mu_i + beta_i * m_t + regime_boost * regime_t + a[i,t]`` with a market factor
  ``m`` (AR(1)), a calm/turbulent Markov regime, and a per-stock AR(1) ``a`` with
  occasional volatility jumps.
* Between the feature and the target bucket the level moves by ``xi`` (a market shock
  shared by the time_id, an idiosyncratic one, and rare news jumps): nobody knows it.
* Inside the 1,200 seconds an Ornstein-Uhlenbeck deviation ``u`` makes volatility
  cluster; it carries from the feature bucket into the target bucket.
* The efficient price diffuses with that volatility plus a persistent drift and rare
  price jumps; quotes sit on a tick grid (normalised to 1.0 at each bucket's start) with
  a spread that widens with volatility; sizes follow persistent depth and imbalance
  processes (thinner books, imbalance leaning with the drift); the book is written at
  irregular seconds, more often when volatile; trades arrive faster and larger when
  volatile.

``oracle`` is E[next-bucket RV | hidden state at the end of the feature bucket],
estimated by simulating the target bucket ``oracle_paths`` more times from that state
with fresh draws of everything the state does not determine. It never looks at the
realised target path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter

from rtvol import schema
from rtvol.features.offline import wap
from rtvol.features.spec import BUCKET_SECONDS

Progress = Callable[[int], object]


@dataclass(frozen=True)
class SynthConfig:
    stocks: int = 40
    time_ids: int = 600
    seed: int = 0
    oracle_paths: int = 32
    # stock-level (drawn once per stock)
    log10_vol_range: tuple[float, float] = (-4.1, -3.6)  # per-second volatility
    log10_tick_range: tuple[float, float] = (-4.3, -3.8)  # tick / price
    depth_range: tuple[float, float] = (60.0, 900.0)
    # across time_ids
    market_phi: float = 0.9
    market_sd: float = 0.12
    idio_phi: float = 0.8
    idio_sd: float = 0.2
    regime_enter: float = 0.03
    regime_leave: float = 0.1
    regime_boost: float = 0.5
    vol_jump_prob: float = 0.02
    vol_jump_size: tuple[float, float] = (0.6, 1.2)
    # between the feature and the target bucket (unknowable)
    idio_persist: float = 0.5  # share of the idiosyncratic deviation left in the target bucket
    shock_market_sd: float = 0.1
    shock_idio_sd: float = 0.1
    news_prob: float = 0.02
    news_size: tuple[float, float] = (0.4, 1.0)
    # within the buckets
    ou_tau_s: float = 240.0
    ou_sd: float = 0.3
    drift_sd: float = 0.4  # drift over a bucket, in units of the bucket's diffusion
    drift_persist: float = 0.6
    price_jump_prob: float = 0.0015
    price_jump_sd: float = 10.0  # in per-second volatilities
    book_rate: float = 0.6
    trade_rate: float = 0.15
    chunk_time_ids: int = 25


DEMO = SynthConfig()
TINY = SynthConfig(stocks=4, time_ids=40, oracle_paths=8)


@dataclass
class Stocks:
    mu: np.ndarray
    beta: np.ndarray
    tick: np.ndarray
    depth: np.ndarray
    trade_size: np.ndarray


@dataclass
class BucketState:
    """What carries across seconds and from the feature into the target bucket."""

    u: np.ndarray
    imbalance: np.ndarray
    log_depth: np.ndarray


def _stocks(cfg: SynthConfig, rng: np.random.Generator) -> Stocks:
    n = cfg.stocks
    return Stocks(
        mu=np.log(10.0 ** rng.uniform(*cfg.log10_vol_range, n)),
        beta=rng.uniform(0.7, 1.3, n),
        tick=10.0 ** rng.uniform(*cfg.log10_tick_range, n),
        depth=np.exp(rng.uniform(np.log(cfg.depth_range[0]), np.log(cfg.depth_range[1]), n)),
        trade_size=np.exp(rng.uniform(np.log(20), np.log(200), n)),
    )


def _levels(cfg: SynthConfig, st: Stocks,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Latent log-vol level h[stock, time_id] of the feature buckets, and its idiosyncratic part."""
    n, t_n = cfg.stocks, cfg.time_ids
    market = np.zeros(t_n)
    regime = np.zeros(t_n)
    idio = np.zeros((n, t_n))
    m = rng.normal(0, cfg.market_sd / np.sqrt(1 - cfg.market_phi**2))
    r = 0.0
    a = rng.normal(0, cfg.idio_sd / np.sqrt(1 - cfg.idio_phi**2), n)
    for t in range(t_n):  # a loop over time_ids only; every stock moves at once
        m = cfg.market_phi * m + rng.normal(0, cfg.market_sd)
        flip = rng.random() < (cfg.regime_leave if r else cfg.regime_enter)
        r = 1.0 - r if flip else r
        jumps = (rng.random(n) < cfg.vol_jump_prob) * rng.uniform(*cfg.vol_jump_size, n)
        a = cfg.idio_phi * a + rng.normal(0, cfg.idio_sd, n) + jumps
        market[t], regime[t], idio[:, t] = m, r, a
    level = st.mu[:, None] + st.beta[:, None] * market + cfg.regime_boost * regime + idio
    return level, idio


def _shock(cfg: SynthConfig, beta: np.ndarray, time_ix: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """Level change between feature and target bucket; one market draw per time_id."""
    common = rng.normal(0, cfg.shock_market_sd, cfg.time_ids)[time_ix]
    news = (rng.random(len(beta)) < cfg.news_prob) * rng.uniform(*cfg.news_size, len(beta))
    return beta * common + rng.normal(0, cfg.shock_idio_sd, len(beta)) + news


def _ar_path(start: np.ndarray, phi: float, noise: np.ndarray) -> np.ndarray:
    """x[s] = phi * x[s-1] + noise[s], with x[-1] = start, along axis 1."""
    y, _ = lfilter([1.0], [1.0, -phi], noise, axis=1, zi=(phi * start)[:, None])
    return y


def _simulate(cfg: SynthConfig, level: np.ndarray, drift: np.ndarray, state: BucketState,
              pair: _Pairs, rng: np.random.Generator, full: bool) -> tuple[dict, BucketState]:
    """One bucket of BUCKET_SECONDS seconds for each pair; ``full`` adds level 2 and trades."""
    n, s_n = len(level), BUCKET_SECONDS
    rho = np.exp(-1.0 / cfg.ou_tau_s)
    u = _ar_path(state.u, rho, rng.normal(0, cfg.ou_sd * np.sqrt(1 - rho**2), (n, s_n)))
    log_vol = level[:, None] + u
    excess = log_vol - pair.mu[:, None]
    vol = np.exp(log_vol)

    steps = vol * rng.standard_normal((n, s_n)) + (drift * vol.mean(axis=1) / np.sqrt(s_n))[:, None]
    jump = rng.random((n, s_n)) < cfg.price_jump_prob
    steps += jump * rng.normal(0, cfg.price_jump_sd, (n, s_n)) * vol
    steps[:, 0] = 0.0  # each bucket starts at 1.0
    price = np.exp(np.cumsum(steps, axis=1))

    tick = pair.tick[:, None]
    spread_ticks = 1 + rng.poisson(0.4 * np.exp(excess))
    bid1 = (np.floor(price / tick) - (spread_ticks - 1) // 2) * tick
    ask1 = bid1 + spread_ticks * tick

    lean = np.tanh(0.5 * drift)[:, None]
    imb = np.clip(_ar_path(state.imbalance, 0.97, rng.normal(0, 0.06, (n, s_n))) , -0.9, 0.9)
    log_depth = _ar_path(state.log_depth, 0.98, rng.normal(0, 0.04, (n, s_n)))
    depth = pair.depth[:, None] * np.exp(log_depth - 0.5 * excess)
    imb_lean = np.clip(imb + 0.3 * lean, -0.95, 0.95)
    bid_size1 = np.maximum(1, np.rint(depth * (1 + imb_lean) / 2))
    ask_size1 = np.maximum(1, np.rint(depth * (1 - imb_lean) / 2))

    rate = cfg.book_rate * np.exp(0.5 * excess)
    written = rng.random((n, s_n)) < -np.expm1(-rate)
    written[:, 0] = True
    out = {"bid_price1": bid1, "ask_price1": ask1, "bid_size1": bid_size1,
           "ask_size1": ask_size1, "written": written}
    if full:
        out["bid_price2"] = bid1 - tick * (1 + rng.poisson(0.3, (n, s_n)))
        out["ask_price2"] = ask1 + tick * (1 + rng.poisson(0.3, (n, s_n)))
        lvl2 = depth * 1.5 * np.exp(rng.normal(0, 0.3, (n, s_n)))
        imb2 = np.clip(imb_lean + rng.normal(0, 0.2, (n, s_n)), -0.95, 0.95)
        out["bid_size2"] = np.maximum(1, np.rint(lvl2 * (1 + imb2) / 2))
        out["ask_size2"] = np.maximum(1, np.rint(lvl2 * (1 - imb2) / 2))
        n_trades = rng.poisson(cfg.trade_rate * np.exp(0.8 * excess))
        buys = rng.binomial(n_trades, np.clip(0.5 + 0.25 * lean, 0.05, 0.95))
        has = n_trades > 0
        out["trade_price"] = np.where(
            has, (buys * ask1 + (n_trades - buys) * bid1) / np.maximum(n_trades, 1), 0.0)
        size = n_trades * pair.trade_size[:, None] * np.exp(0.3 * excess + rng.normal(0, 0.5, (n, s_n)))
        out["trade_size"] = np.maximum(n_trades, np.rint(size))
        out["order_count"] = n_trades
    end = BucketState(u=u[:, -1], imbalance=imb[:, -1], log_depth=log_depth[:, -1])
    return out, end


def _wap_rv_and_return(sim: dict) -> tuple[np.ndarray, np.ndarray]:
    """RV and net log return of WAP1 over the written rows of each simulated bucket."""
    log_wap = np.log(wap(sim["bid_price1"], sim["ask_price1"], sim["bid_size1"], sim["ask_size1"]))
    written = sim["written"]
    seconds = np.arange(written.shape[1])
    last = np.maximum.accumulate(np.where(written, seconds, 0), axis=1)
    held = np.take_along_axis(log_wap, last, axis=1)
    r = np.where(written[:, 1:], log_wap[:, 1:] - held[:, :-1], 0.0)
    return np.sqrt(np.sum(r * r, axis=1)), held[:, -1] - held[:, 0]


@dataclass
class _Pairs:
    stock: np.ndarray
    time_ix: np.ndarray
    mu: np.ndarray
    beta: np.ndarray
    tick: np.ndarray
    depth: np.ndarray
    trade_size: np.ndarray


def _stationary_state(cfg: SynthConfig, n: int, rng: np.random.Generator) -> BucketState:
    return BucketState(
        u=rng.normal(0, cfg.ou_sd, n),
        imbalance=rng.normal(0, 0.06 / np.sqrt(1 - 0.97**2), n),
        log_depth=rng.normal(0, 0.04 / np.sqrt(1 - 0.98**2), n),
    )


@dataclass
class Generated:
    book: dict[int, pa.Table]
    trade: dict[int, pa.Table]
    target: pa.Table
    oracle: pa.Table
    # per (stock, time_id) extras used by training (not written by Optiver's layout)
    labels: dict[str, np.ndarray]


def generate(cfg: SynthConfig, progress: Progress | None = None) -> Generated:
    root = np.random.SeedSequence(cfg.seed)
    stock_seq, level_seq, chunk_seq = root.spawn(3)
    st = _stocks(cfg, np.random.default_rng(stock_seq))
    levels, idio = _levels(cfg, st, np.random.default_rng(level_seq))
    # the target bucket's known level: idiosyncratic spikes partly revert
    target_levels = levels - (1.0 - cfg.idio_persist) * idio
    drift = np.random.default_rng(chunk_seq.spawn(1)[0]).normal(0, cfg.drift_sd, levels.shape)

    book_parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(cfg.stocks)}
    trade_parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(cfg.stocks)}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("stock", "time", "target", "oracle", "net_return")}
    starts = range(0, cfg.time_ids, cfg.chunk_time_ids)
    for chunk_index, (t0, seq) in enumerate(zip(starts, chunk_seq.spawn(len(starts)), strict=True)):
        rng = np.random.default_rng(seq)
        t1 = min(t0 + cfg.chunk_time_ids, cfg.time_ids)
        stock_ix = np.repeat(np.arange(cfg.stocks), t1 - t0)  # stock-major: rows split by slice
        time_ix = np.tile(np.arange(t0, t1), cfg.stocks)
        pair = _Pairs(stock_ix, time_ix, st.mu[stock_ix], st.beta[stock_ix], st.tick[stock_ix],
                      st.depth[stock_ix], st.trade_size[stock_ix])
        level = levels[stock_ix, time_ix]
        level_next = target_levels[stock_ix, time_ix]
        k = drift[stock_ix, time_ix]
        start = _stationary_state(cfg, len(level), rng)
        feat, end = _simulate(cfg, level, k, start, pair, rng, full=True)

        def next_bucket(rng: np.random.Generator, pair: _Pairs = pair, level: np.ndarray = level_next,
                        k: np.ndarray = k, end: BucketState = end) -> tuple[np.ndarray, np.ndarray]:
            shock = _shock(cfg, pair.beta, pair.time_ix, rng)
            k_next = cfg.drift_persist * k + rng.normal(0, cfg.drift_sd * np.sqrt(
                1 - cfg.drift_persist**2), len(k))
            sim, _ = _simulate(cfg, level + shock, k_next, end, pair, rng, full=False)
            return _wap_rv_and_return(sim)

        target, net = next_bucket(rng)
        oracle = np.mean([next_bucket(rng)[0] for _ in range(cfg.oracle_paths)], axis=0)
        _split_rows(feat, cfg.stocks, t1 - t0, t0, book_parts, trade_parts)
        for key, v in (("stock", stock_ix), ("time", time_ix), ("target", target),
                       ("oracle", oracle), ("net_return", net)):
            cols[key].append(v)
        if progress:
            progress(chunk_index)

    stock = np.concatenate(cols["stock"])
    time = np.concatenate(cols["time"])
    order = np.lexsort((time, stock))
    stock, time = stock[order], time[order]
    target = np.concatenate(cols["target"])[order]
    oracle = np.concatenate(cols["oracle"])[order]
    return Generated(
        book={i: _table(book_parts[i], schema.BOOK_SCHEMA) for i in range(cfg.stocks)},
        trade={i: _table(trade_parts[i], schema.TRADE_SCHEMA) for i in range(cfg.stocks)},
        target=pa.table({"stock_id": stock.astype(np.int32), "time_id": time.astype(np.int32),
                         "target": target}, schema=schema.TARGET_SCHEMA),
        oracle=pa.table({"stock_id": stock.astype(np.int32), "time_id": time.astype(np.int32),
                         "oracle": oracle}, schema=schema.ORACLE_SCHEMA),
        labels={"stock_id": stock, "time_id": time,
                "net_return": np.concatenate(cols["net_return"])[order]},
    )


def _split_rows(sim: dict, n_stocks: int, per_stock: int, t0: int,
                book_parts: dict[int, list[dict[str, np.ndarray]]],
                trade_parts: dict[int, list[dict[str, np.ndarray]]]) -> None:
    """Cut a chunk's simulated seconds into per-stock book and trade rows (time-ordered)."""
    def rows(mask: np.ndarray, fields: dict[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        pair_ix, second = np.nonzero(mask)
        data = {"time_id": t0 + pair_ix % per_stock, "seconds_in_bucket": second}
        data |= {out: sim[src][pair_ix, second] for out, src in fields.items()}
        return pair_ix // per_stock, data

    book_fields = {c: c for c in schema.BOOK_COLUMNS[2:]}
    trade_fields = {"price": "trade_price", "size": "trade_size", "order_count": "order_count"}
    for mask, fields, parts in ((sim["written"], book_fields, book_parts),
                                (sim["order_count"] > 0, trade_fields, trade_parts)):
        stock_of_row, data = rows(mask, fields)
        bounds = np.searchsorted(stock_of_row, np.arange(n_stocks + 1))
        for i in range(n_stocks):
            parts[i].append({k: v[bounds[i]:bounds[i + 1]] for k, v in data.items()})


def _table(parts: list[dict[str, np.ndarray]], sch: pa.Schema) -> pa.Table:
    arrays = [np.concatenate([p[name] for p in parts]).astype(sch.field(name).type.to_pandas_dtype())
              for name in sch.names]
    return pa.Table.from_arrays(arrays, schema=sch)


def write(gen: Generated, out: Path, split: str = "train") -> None:
    """Write Optiver's layout: partitioned parquet per stock plus the CSVs."""
    import pyarrow.csv as pacsv

    out.mkdir(parents=True, exist_ok=True)
    for folder, tables in ((schema.book_dir(split), gen.book), (schema.trade_dir(split), gen.trade)):
        for stock_id, table in tables.items():
            part = out / folder / schema.stock_partition(stock_id)
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, part / "part-0.parquet", compression="zstd")
    pacsv.write_csv(gen.target, out / f"{split}.csv")
    pacsv.write_csv(gen.oracle, out / schema.ORACLE_FILE)
    labels = gen.labels
    pacsv.write_csv(pa.table({"stock_id": labels["stock_id"].astype(np.int32),
                              "time_id": labels["time_id"].astype(np.int32),
                              "next_return": labels["net_return"]}, schema=schema.NEXT_RETURN_SCHEMA),
                    out / schema.NEXT_RETURN_FILE)
