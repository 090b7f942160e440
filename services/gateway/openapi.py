"""What the REST answers look like, for the OpenAPI document only: the handlers send orjson
bytes, so these models never validate or encode anything at request time."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class DirectionOut(BaseModel):
    down: float
    flat: float
    up: float


class SignalOut(BaseModel):
    """One stock's answer; only ``stock_id`` and ``error`` when it could not be answered."""

    stock_id: int
    rv: float | None = Field(None, description="predicted realized volatility of the next window")
    direction: DirectionOut | None = Field(None, description="absent on tier 3")
    momentum: float | None = None
    model: str | None = None
    version: str | None = None
    tier: int | None = Field(None, description="1 sidecar, 2 ONNX Runtime in the gateway, 3 vol estimate")
    feature_age_ms: float | None = None
    stale: bool | None = Field(None, description="answered while the feature store was unreachable")
    window_version: int | None = Field(None, description="steps closed in the window it was computed "
                                       "from (0: not known)")
    received_us: int | None = Field(None, description="wall clock (µs) at which the feature service "
                                    "received the update behind it (0: not known)")
    kelly_fraction: float | None = Field(None, description="when the request asked for Kelly sizing")
    error: str | None = None


class PredictOut(BaseModel):
    signals: list[SignalOut] = Field(description="in the order of the request's stock_ids")


class ErrorOut(BaseModel):
    error: str = Field(description="names the field at fault first")


class UniverseEntryOut(BaseModel):
    stock_id: int
    score: float
    volatility: float
    momentum: float


class UniverseOut(BaseModel):
    stock_ids: list[int] = Field(description="every stock with a volatility estimate")
    top: list[UniverseEntryOut] | None = Field(description="the feature service's ranking "
                                               "(null: unreachable)")


class ReadyOut(BaseModel):
    ready: bool = Field(description="start-up has finished and the drain has not begun")
    tier: int | None = Field(None, description="when ready: 1 (sidecar) or 2 (ONNX Runtime in the gateway)")
    reason: str = Field(description="why this tier, e.g. sidecar breaker open since T; or what "
                        "start-up is waiting for")
    feature_replicas_followed: str | None = Field(
        None, description="when ready, with several feature replicas: 'I of N', those whose Watch "
                          "stream is open (the others' stocks are answered from the store)")


class LiveOut(BaseModel):
    status: str


def state_limits(app: FastAPI, max_ids: int) -> None:
    """The document states the limits this gateway enforces: max_ids is a setting, so it is
    written into the generated schema (stock_ids' maxItems, top_k's maximum)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            doc["components"]["schemas"]["PredictBody"]["properties"]["stock_ids"]["maxItems"] = max_ids
            for param in doc["paths"]["/v1/universe"]["get"]["parameters"]:
                if param["name"] == "top_k":
                    param["schema"]["maximum"] = max_ids
            app.openapi_schema = doc
        return app.openapi_schema
    app.openapi = openapi  # type: ignore[method-assign]
