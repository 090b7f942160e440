"""One stock's answer, the same for REST, gRPC, the cache and Subscribe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rtvol.proto.v1 import signals_pb2 as pb


@dataclass(slots=True)
class Signal:
    stock_id: int
    rv: float = 0.0
    direction: tuple[float, float, float] | None = None  # down, flat, up; None on tier 3
    momentum: float | None = None
    model: str = ""
    version: str = ""
    tier: int = 0
    feature_written_us: int = 0  # when the features behind it were written
    computed_us: int = 0
    stale: bool = False
    error: str = ""
    kelly_fraction: float | None = None
    window_version: int = 0  # steps closed in the window it was computed from; 0: not known
    received_us: int = 0  # the feature service's receipt of the update behind it; 0: not known
    window_end_step: int = 0  # global step its window ends before (live scoring); 0: not known
    hops_us: tuple[int, ...] = ()  # the pipeline's hops (rtvol/pipeline_hops.py) up to its publication

    def to_json(self, now_us: int) -> dict[str, Any]:
        if self.error:
            return {"stock_id": self.stock_id, "error": self.error}
        d = self.direction
        out: dict[str, Any] = {
            "stock_id": self.stock_id, "rv": self.rv,
            "direction": None if d is None else {"down": d[0], "flat": d[1], "up": d[2]},
            "momentum": self.momentum, "model": self.model, "version": self.version, "tier": self.tier,
            "feature_age_ms": (now_us - self.feature_written_us) / 1000.0, "stale": self.stale,
            "window_version": self.window_version, "received_us": self.received_us}
        if self.kelly_fraction is not None:
            out["kelly_fraction"] = self.kelly_fraction
        return out

    def to_proto(self, now_us: int) -> pb.Signal:
        if self.error:
            return pb.Signal(stock_id=self.stock_id, error=self.error)
        msg = pb.Signal(stock_id=self.stock_id, rv=self.rv, model=self.model, version=self.version,
                        tier=self.tier, feature_age_ms=(now_us - self.feature_written_us) / 1000.0,
                        stale=self.stale, window_version=self.window_version, received_us=self.received_us)
        if self.direction is not None:
            msg.direction.down, msg.direction.flat, msg.direction.up = self.direction
        if self.momentum is not None:
            msg.momentum = self.momentum
        if self.kelly_fraction is not None:
            msg.kelly_fraction = self.kelly_fraction
        return msg

    def dumps(self) -> bytes:
        """The cache encoding (Redis hash value)."""
        return orjson.dumps([self.stock_id, self.rv, self.direction, self.momentum, self.model,
                             self.version, self.tier, self.feature_written_us, self.computed_us,
                             self.window_version, self.received_us])

    @classmethod
    def loads(cls, raw: bytes) -> Signal:
        sid, rv, d, mom, model, version, tier, written, computed, *stamp = orjson.loads(raw)
        window_version, received = stamp or (0, 0)  # written before the pipeline: not known
        return cls(sid, rv, None if d is None else tuple(d), mom, model, version, tier, written, computed,
                   window_version=window_version, received_us=received)


def finite_rows(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Per row: every output value (rv, direction, momentum) is finite."""
    rows = np.ones(len(outputs["rv"]), bool)
    for value in outputs.values():
        rows &= np.isfinite(value.reshape(len(value), -1)).all(axis=1)
    return rows


def from_outputs(outputs: dict[str, np.ndarray], ids: list[int], model: str, version: str, tier: int,
                 written_us: list[int], computed_us: int) -> list[Signal | None]:
    """One signal per row of a model's outputs; None for a row with a non-finite value."""
    # as lists first: a number read from a numpy array one at a time costs ~10x a list item
    rv, m = outputs["rv"][:, 0].tolist(), outputs["momentum"][:, 0].tolist()
    d, finite = outputs["direction"].tolist(), finite_rows(outputs).tolist()
    return [Signal(sid, r, (dd[0], dd[1], dd[2]), mm, model, version, tier, w, computed_us) if ok else None
            for sid, r, dd, mm, w, ok in zip(ids, rv, d, m, written_us, finite, strict=True)]
