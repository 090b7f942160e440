"""REST for people and scripts (FastAPI). Bad input is a 4xx naming the field.

Answers are orjson bytes in a plain Response: no response-model validation or re-encoding
on the hot path; services/gateway/openapi.py describes them in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from opentelemetry import context as otel_context
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, StrictBool, StrictInt

from rtvol.errors import InvalidInput, NotFound
from rtvol.featurestore import now_us
from rtvol.services.gateway import metrics, multiproc, validation
from rtvol.services.gateway.hotpath import HotPredict
from rtvol.services.gateway.openapi import (
    ErrorOut,
    LiveOut,
    PredictOut,
    ReadyOut,
    SignalOut,
    UniverseOut,
    state_limits,
)
from rtvol.services.gateway.predictor import Predictor
from rtvol.telemetry import exports_traces, extract_headers

UniverseFn = Callable[[int], Awaitable[dict[str, Any]]]


# ids are int32 (as in the gRPC API); one outside the known range is an item error, not a 400
StockId = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]


class PredictBody(BaseModel):
    stock_ids: list[StockId] = Field(min_length=1, description="at most the gateway's max_ids "
                                     "(maxItems states it)")
    max_staleness_ms: float | None = Field(None, description="a pre-computed signal at most this old "
                                           "may answer; absent or 0: always infer (a gateway following "
                                           "the Watch stream answers from the latest window it holds)")
    kelly: StrictBool = False


BAD_INPUT: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut}}


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def _route(request: Request) -> str:
    """The matched route's template (/v1/signals/{stock_id}), never the raw path: one metric
    series per route, whatever paths callers send."""
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


def _reject(request: Request, status: int, reason: str, message: str) -> Response:
    metrics.REJECTS.labels(_route(request), reason).inc()
    return json_response({"error": message}, status)


class PredictHandler:
    """POST /v1/predict once its body is parsed, for FastAPI's route and the plain ASGI path in
    front of it (hotpath.py): checks (InvalidInput names the field), the caller's trace
    context, the prediction, the JSON answer."""

    def __init__(self, predictor: Predictor, max_ids: int) -> None:
        self.predictor, self.max_ids, self.traced = predictor, max_ids, exports_traces()

    async def __call__(self, stock_ids: list[int], max_staleness_ms: float | None, kelly: bool,
                       headers: Callable[[], Mapping[str, str]]) -> bytes:
        ids = validation.check_ids(stock_ids, self.max_ids)
        staleness = validation.check_staleness(max_staleness_ms)
        token = otel_context.attach(extract_headers(headers())) if self.traced else None
        try:
            signals = await self.predictor.predict(ids, staleness, kelly, "rest")
        finally:
            if token is not None:
                otel_context.detach(token)
        now = now_us()
        return orjson.dumps({"signals": [s.to_json(now) for s in signals]})


def create_app(predictor: Predictor, max_ids: int, ready: Callable[[], dict[str, Any]],
               universe: UniverseFn, docs: bool = True) -> HotPredict:
    """The gateway's HTTP application: POST /v1/predict on a plain ASGI path when its body is
    plain (hotpath.py), everything else (and the OpenAPI document) FastAPI."""
    answer = PredictHandler(predictor, max_ids)
    return HotPredict(_fastapi(predictor, max_ids, ready, universe, docs, answer), answer)


def _fastapi(predictor: Predictor, max_ids: int, ready: Callable[[], dict[str, Any]], universe: UniverseFn,
             docs: bool, answer: PredictHandler) -> FastAPI:
    # No FastAPI native telemetry: its server and per-operation spans repeat what `predict`
    # shows (and cost ~150 µs a request here, against a 10 % budget of the p50); the handler
    # continues the caller's W3C context itself. Metrics and logs: Prometheus and logging.
    app = FastAPI(title="rtvol gateway", version="1",
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        if first.get("type") == "json_invalid":  # loc is ("body", character position)
            message = f"body: malformed JSON at character {loc[-1]}"
            return _reject(request, 400, "malformed_json", message)
        field = ".".join(p for p in loc if p not in ("body", "query", "path")) or "body"
        return _reject(request, 400, "bad_field", f"{field}: {first.get('msg', 'invalid')}")

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, exc: InvalidInput) -> Response:
        return _reject(request, 400, exc.reason, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return json_response({"error": str(exc)}, 404)

    @app.post("/v1/predict", response_model=None, responses={200: {"model": PredictOut}, **BAD_INPUT})
    async def predict(body: PredictBody, request: Request) -> Response:
        content = await answer(body.stock_ids, body.max_staleness_ms, body.kelly, lambda: request.headers)
        return Response(content, media_type="application/json")

    @app.get("/v1/signals/{stock_id}", response_model=None,
             responses={200: {"model": SignalOut}, 404: {"model": ErrorOut}, **BAD_INPUT})
    async def cached_signal(stock_id: Annotated[int, Path(ge=-(2**31), le=2**31 - 1)]) -> Response:
        sig = await predictor.cache.get_remote(stock_id)
        if sig is None:
            raise NotFound(f"no pre-computed signal for stock {stock_id}")
        return json_response(sig.to_json(now_us()))

    @app.get("/v1/universe", response_model=None, responses={200: {"model": UniverseOut}, **BAD_INPUT})
    async def get_universe(top_k: Annotated[int, Query(ge=1, description="at most max_ids")] = 20
                           ) -> Response:
        if not 1 <= top_k <= max_ids:
            raise InvalidInput(f"top_k: {top_k} outside 1..{max_ids}", "bad_top_k")
        return json_response(await universe(top_k))

    @app.get("/livez", response_model=None, responses={200: {"model": LiveOut}})
    async def livez() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", response_model=None, responses={200: {"model": ReadyOut}, 503: {"model": ReadyOut}})
    async def readyz() -> Response:
        state = ready()  # {"ready": ..., "tier": ..., "reason": ...}: services/gateway/readiness.py
        return json_response(state, 200 if state["ready"] else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(multiproc.exposition(), media_type=CONTENT_TYPE_LATEST)

    state_limits(app, max_ids)
    return app
