"""Request validation shared by REST and gRPC: InvalidInput names the field, and a reason
label feeds the rejects counter."""

from __future__ import annotations

from collections.abc import Sequence

from rtvol.errors import InvalidInput

MAX_STALENESS_MS = 24 * 3600 * 1000
MAX_REQUEST_ID = 128  # characters; echoed back, so bounded
MAX_TRACEPARENT = 256  # a W3C traceparent is 55


def check_ids(stock_ids: Sequence[int], max_ids: int) -> list[int]:
    if len(stock_ids) == 0:
        raise InvalidInput("stock_ids: must not be empty", "empty_ids")
    if len(stock_ids) > max_ids:
        raise InvalidInput(f"stock_ids: {len(stock_ids)} ids, at most {max_ids} per request", "too_many_ids")
    return [int(s) for s in stock_ids]


def check_text(field: str, value: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise InvalidInput(f"{field}: {len(value)} characters, at most {max_chars}", f"long_{field}")
    return value


def check_staleness(max_staleness_ms: int | float | None) -> float:
    """0 (or absent): always infer; otherwise a cached signal at most this old may answer."""
    if max_staleness_ms is None:
        return 0.0
    if not 0 <= max_staleness_ms <= MAX_STALENESS_MS:
        raise InvalidInput(f"max_staleness_ms: {max_staleness_ms} outside 0..{MAX_STALENESS_MS}",
                           "bad_staleness")
    return float(max_staleness_ms)
