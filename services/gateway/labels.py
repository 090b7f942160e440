"""The model names and version labels a gateway serves: those a slot of the workers' shared
signal table (signaltable.py) holds whole, as a name cut short would be served as another
name. Checked once per version, when tier 2 loads it or the sidecar first answers with it,
so a slot is written without a check; a version that does not fit is refused."""

from __future__ import annotations

import logging

from rtvol.services.gateway import metrics

log = logging.getLogger(__name__)
MODEL_BYTES, VERSION_BYTES = 64, 32
_refused: set[tuple[str, str]] = set()  # each refusal is logged once


def too_long(model: str, version: str) -> str:
    """Why ``model`` ``version`` cannot be served ('' when it can)."""
    for label, text, width in (("model name", model, MODEL_BYTES), ("version", version, VERSION_BYTES)):
        if len(text.encode()) > width:
            return f"{label} {text!r} is longer than the shared signal table holds ({width} bytes)"
    return ""


def refuses(model: str, version: str, source: str) -> bool:
    """Whether ``model`` ``version`` (from ``source``) is refused; a refusal is logged and
    counted (rtvol_gateway_model_refused_total{reason="label_too_long"}) once."""
    why = too_long(model, version)
    if why and (model, version) not in _refused:
        _refused.add((model, version))
        metrics.MODEL_REFUSED.labels(model, "label_too_long").inc()
        log.error("refusing %s version %s from %s: %s", model, version, source, why)
    return bool(why)
