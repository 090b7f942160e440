"""The gateway as a real process against a real redis-server, feature service and model
sidecar: REST and gRPC answers, pre-computed signals and pushes, bad input."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import onnxruntime as ort
import pytest
from helpers import feed, procs
from helpers.store import stored_windows
from helpers.subscribe import collecting

from rtvol.pipeline_hops import HOPS
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.repository import version_dir

pytestmark = pytest.mark.integration
STOCKS = 8


class Stack:
    def __init__(self, base: str, grpc_target: str, feature: str, repo: Path, redis_url: str,
                 log: Path) -> None:
        self.base, self.grpc, self.feature, self.repo = base, grpc_target, feature, repo
        self.redis_url, self.log = redis_url, log  # the gateway's log
        self.http = httpx.Client(base_url=base, timeout=10)


@pytest.fixture(scope="module")
def stack(redis_db: str, tiny_repo: Path, tiny_data: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("gateway_api")
    with procs.pipeline_stack(logs, redis_db, tiny_repo, STOCKS, "--max-ids", "16",
                              "--store-timeout-ms", "200") as (feature_url, base, grpc_target, gw):
        feed.replay(feature_url, tiny_data, range(0, 3))
        yield Stack(base, grpc_target, feature_url, tiny_repo, redis_db, gw.log)


def test_rest_predict_answers_from_the_sidecar_per_stock(stack: Stack, tiny_data: Path) -> None:
    reply = stack.http.post("/v1/predict", json={"stock_ids": [1, 0, 99], "kelly": True})
    assert reply.status_code == 200, reply.text
    one, zero, unknown = reply.json()["signals"]
    assert unknown == {"stock_id": 99, "error": "unknown stock id 99 (known: 0..7)"}
    session = ort.InferenceSession(str(version_dir(stack.repo, "rtvol_cnn") / "model.onnx"))
    want_rv, want_dir, want_mom = session.run(["rv", "direction", "momentum"],
                                              {"window": stored_windows(stack.redis_url, [1, 0])})
    for i, sig in enumerate((one, zero)):
        assert sig["tier"] == 1 and sig["model"] == "rtvol_cnn" and sig["version"] == "1"
        assert sig["rv"] == pytest.approx(float(want_rv[i, 0]), rel=1e-5)
        assert [sig["direction"][k] for k in ("down", "flat", "up")] == pytest.approx(want_dir[i], abs=1e-5)
        assert sig["momentum"] == pytest.approx(float(want_mom[i, 0]), abs=1e-5)
        assert sig["feature_age_ms"] >= 0 and not sig["stale"]
        assert -0.25 <= sig["kelly_fraction"] <= 0.25
    assert stack.http.get("/livez").status_code == 200
    assert stack.http.get("/readyz").json() == {"ready": True, "tier": 1, "reason": "sidecar ready"}
    openapi = stack.http.get("/openapi.json").json()
    # the answers are pre-serialised bytes; the document still describes them
    answers = openapi["paths"]["/v1/predict"]["post"]["responses"]
    schema = answers["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PredictOut"}
    assert "error" in openapi["components"]["schemas"]["ErrorOut"]["properties"]
    assert "kelly_fraction" in openapi["components"]["schemas"]["SignalOut"]["properties"]
    def universe() -> dict:  # type: ignore[type-arg]
        return stack.http.get("/v1/universe", params={"top_k": 2}).json()  # type: ignore[no-any-return]

    # the volatility estimate is refreshed in the background (feature service, then gateway)
    assert procs.wait_until(lambda: set(universe()["stock_ids"]) >= {0, 1, 2, 3}, 10)
    assert len(universe()["top"]) == 2


def test_grpc_predict_stream_subscribe_and_cached_signals(stack: Stack, tiny_data: Path) -> None:
    with grpc.insecure_channel(stack.grpc) as ch:
        stub = pb_grpc.SignalsStub(ch)
        unary = stub.Predict(pb.PredictRequest(stock_ids=[2, 3]), timeout=10)
        assert [s.stock_id for s in unary.signals] == [2, 3] and all(s.tier == 1 for s in unary.signals)
        assert all(s.HasField("direction") and s.HasField("momentum") for s in unary.signals)
        requests = [pb.PredictRequest(stock_ids=[i % 4], request_id=f"r{i}") for i in range(5)]
        answers = list(stub.PredictStream(iter(requests), timeout=10))
        assert [a.request_id for a in answers] == [f"r{i}" for i in range(5)]
        assert [a.signals[0].stock_id for a in answers] == [i % 4 for i in range(5)]

        pushed: list[pb.Signal] = []
        subscription = stub.Subscribe(pb.SubscribeRequest(all=True), timeout=30)

        def collect() -> None:
            for sig in subscription:
                pushed.append(sig)
                if len({s.stock_id for s in pushed}) >= 4:
                    return

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        assert procs.wait_until(lambda: len(stack.http.get("/metrics").text) > 0, 5)
        # the subscription must be registered before the change it should see
        assert procs.wait_until(lambda: bool(pushed) or _feed_once(stack, tiny_data), 20, 0.5)
        reader.join(timeout=20)
        subscription.cancel()
    assert {s.stock_id for s in pushed} >= {0, 1, 2, 3} and all(s.tier == 1 for s in pushed)
    cached = stack.http.get("/v1/signals/0").json()
    assert cached["tier"] == 1 and cached["stock_id"] == 0
    # this gateway follows the Watch stream: a Predict is a read of the signal held in memory
    before = _metric(stack, 'rtvol_gateway_memory_answers_total{result="current"}')
    hit = stack.http.post("/v1/predict", json={"stock_ids": [0], "max_staleness_ms": 3_600_000}).json()
    assert hit["signals"][0]["rv"] == cached["rv"]
    assert _metric(stack, 'rtvol_gateway_memory_answers_total{result="current"}') == before + 1
    assert stack.http.get("/v1/signals/7").status_code == 404  # a known stock never fed


def test_subscribe_columns_pushes_the_signals_subscribe_pushes(stack: Stack, tiny_data: Path) -> None:
    """The columnar stream and the per-signal stream, open together, get the same numbers for
    every (stock, window version) both saw."""
    with grpc.insecure_channel(stack.grpc) as ch:
        stub = pb_grpc.SignalsStub(ch)
        columns = stub.SubscribeColumns(pb.SubscribeRequest(all=True, hops=True), timeout=30)
        got: dict[tuple[int, int], tuple[float, ...]] = {}
        hop_runs: list[bool] = []  # per message: one run of hops a signal

        def collect() -> None:
            with contextlib.suppress(grpc.RpcError):  # cancelled below
                for msg in columns:
                    for i, sid in enumerate(msg.stock_id):
                        got[sid, msg.window_version[i]] = (msg.rv[i], *msg.direction[3 * i:3 * i + 3],
                                                           msg.momentum[i], msg.tier[i])
                    hop_runs.append(len(msg.hops_us) == len(HOPS) * len(msg.stock_id))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        with collecting(ch, [0, 1, 2, 3]) as pushed:
            assert procs.wait_until(lambda: len({s for s, _ in got}) >= 4 or _feed_once(stack, tiny_data),
                                    20, 0.5)
            assert procs.wait_until(lambda: {s.stock_id for s in pushed} >= {0, 1, 2, 3}, 10)
        columns.cancel()
        reader.join(10)
    both = [(s, (s.rv, s.direction.down, s.direction.flat, s.direction.up, s.momentum, s.tier))
            for s in pushed if (s.stock_id, s.window_version) in got]
    assert both, "no (stock, window version) pushed on both streams"
    assert hop_runs and all(hop_runs)
    for sig, numbers in both:
        assert got[sig.stock_id, sig.window_version] == numbers


_fed = iter(range(3, 40))


def _feed_once(stack: Stack, data: Path) -> bool:
    b = next(_fed)
    feed.replay(stack.feature, data, range(b, b + 1))
    return False  # keep waiting for the push


def _metric(stack: Stack, name: str) -> float:
    text = stack.http.get("/metrics").text
    match = re.search(re.escape(name) + r" ([0-9.e+]+)", text)
    return float(match.group(1)) if match else 0.0


def test_rest_predict_answers_alike_on_the_plain_path_and_through_fastapi(stack: Stack) -> None:
    """application/json bodies take the plain ASGI path (services/gateway/hotpath.py); FastAPI
    takes a +json content type it parses as JSON too: the two answers must be the same."""
    body = b'{"stock_ids": [2, 3, 99], "kelly": true, "max_staleness_ms": null}'

    def both() -> list[list[dict[str, Any]]]:
        replies = [stack.http.post("/v1/predict", content=body, headers={"content-type": kind})
                   for kind in ("application/json", "application/vnd.rtvol+json")]
        for reply in replies:
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "application/json"
        # the age moves between the two calls
        return [[{k: v for k, v in sig.items() if k != "feature_age_ms"} for sig in reply.json()["signals"]]
                for reply in replies]

    # a new window may land between the two calls: the same answer within a few tries
    assert any(plain == routed for plain, routed in (both() for _ in range(5)))


@pytest.mark.parametrize("body,field", [
    (b'{"stock_ids": [1,', "body"),  # malformed JSON
    (b'{"stock_ids": []}', "stock_ids"),
    (b'{"stock_ids": [' + b",".join(b"1" for _ in range(17)) + b"]}", "stock_ids"),
    (b'{"stock_ids": ["a"]}', "stock_ids"),
    (b'{"max_staleness_ms": 5}', "stock_ids"),
    (b'{"stock_ids": [1], "max_staleness_ms": -5}', "max_staleness_ms"),
    (b'{"stock_ids": [1], "max_staleness_ms": "soon"}', "max_staleness_ms"),
    (b'[1, 2]', "body"),
    (b'{"stock_ids": [18446744073709551616]}', "stock_ids"),  # beyond int64: was a 500
    (b'{"stock_ids": [2147483648]}', "stock_ids"),  # beyond int32, as in the gRPC API
])
def test_rest_bad_input_is_a_400_naming_the_field(stack: Stack, body: bytes, field: str) -> None:
    before = sum(float(v) for v in re.findall(r"rtvol_gateway_rejects_total\{[^}]*\} ([0-9.]+)",
                                              stack.http.get("/metrics").text))
    reply = stack.http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith(field)
    after = sum(float(v) for v in re.findall(r"rtvol_gateway_rejects_total\{[^}]*\} ([0-9.]+)",
                                             stack.http.get("/metrics").text))
    assert after == before + 1


@pytest.mark.parametrize("request_,field", [
    (pb.PredictRequest(), "stock_ids"),
    (pb.PredictRequest(stock_ids=list(range(17))), "stock_ids"),
    (pb.PredictRequest(stock_ids=[1], max_staleness_ms=-1), "max_staleness_ms"),
    (pb.PredictRequest(stock_ids=[1], request_id="x" * (4 << 20)), "request_id"),  # was echoed back
])
def test_grpc_bad_input_is_invalid_argument(stack: Stack, request_: pb.PredictRequest, field: str) -> None:
    with grpc.insecure_channel(stack.grpc) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.SignalsStub(ch).Predict(request_, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field)
        with pytest.raises(grpc.RpcError) as err:
            next(iter(pb_grpc.SignalsStub(ch).Subscribe(pb.SubscribeRequest(), timeout=10)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_openapi_states_the_limits_the_gateway_enforces(stack: Stack) -> None:
    doc = stack.http.get("/openapi.json").json()
    ids = doc["components"]["schemas"]["PredictBody"]["properties"]["stock_ids"]
    assert ids["minItems"] == 1 and ids["maxItems"] == 16  # --max-ids 16
    assert ids["items"]["minimum"] == -(2**31) and ids["items"]["maximum"] == 2**31 - 1
    top_k = next(p for p in doc["paths"]["/v1/universe"]["get"]["parameters"] if p["name"] == "top_k")
    assert top_k["schema"]["minimum"] == 1 and top_k["schema"]["maximum"] == 16
    # and what the schema calls invalid is what the gateway refuses (400 naming the field)
    for reply, field in ((stack.http.post("/v1/predict", json={"stock_ids": []}), "stock_ids"),
                         (stack.http.get("/v1/universe", params={"top_k": 0}), "top_k"),
                         (stack.http.get("/v1/universe", params={"top_k": 17}), "top_k")):
        assert reply.status_code == 400 and reply.json()["error"].startswith(field), reply.text


def test_reject_metrics_are_labelled_by_route_template_not_raw_path(stack: Stack) -> None:
    for i in range(30):
        assert stack.http.get(f"/v1/signals/not-a-number-{i}").status_code == 400
    routes = set(re.findall(r'rtvol_gateway_rejects_total\{reason="[^"]*",route="([^"]*)"\}',
                            stack.http.get("/metrics").text))
    assert "/v1/signals/{stock_id}" in routes
    assert not any("not-a-number" in r for r in routes), routes


@pytest.mark.parametrize("method", ["Subscribe", "SubscribeBatches", "SubscribeColumns"])
def test_subscribe_with_too_many_ids_is_invalid_argument(stack: Stack, method: str) -> None:
    with grpc.insecure_channel(stack.grpc) as ch, pytest.raises(grpc.RpcError) as err:
        request = pb.SubscribeRequest(stock_ids=range(17))
        next(iter(getattr(pb_grpc.SignalsStub(ch), method)(request, timeout=10)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("stock_ids")


def test_a_bad_request_inside_predict_stream_is_answered_in_stream(stack: Stack) -> None:
    requests = [pb.PredictRequest(stock_ids=[0], request_id="a"),
                pb.PredictRequest(stock_ids=list(range(17)), request_id="b"),
                pb.PredictRequest(stock_ids=[1], request_id="c")]
    with grpc.insecure_channel(stack.grpc) as ch:
        answers = list(pb_grpc.SignalsStub(ch).PredictStream(iter(requests), timeout=10))
    assert [a.request_id for a in answers] == ["a", "b", "c"]
    assert answers[1].error.startswith("stock_ids") and not answers[1].signals
    assert not answers[0].error and answers[2].signals[0].stock_id == 1 and answers[2].signals[0].tier == 1


@pytest.mark.parametrize("method", ["Predict", "PredictStream", "Subscribe"])
def test_undecodable_grpc_message_is_invalid_argument_one_log_line_and_counted(
        stack: Stack, method: str) -> None:
    path = f"/rtvol.proto.v1.Signals/{method}"
    before = _metric(stack, f'rtvol_grpc_undecodable_total{{method="{path}"}}')
    garbage = b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"  # a field whose length overruns
    with grpc.insecure_channel(stack.grpc) as ch, pytest.raises(grpc.RpcError) as err:
        if method == "Predict":
            ch.unary_unary(path)(garbage, timeout=10)
        elif method == "PredictStream":
            list(ch.stream_stream(path)(iter([garbage]), timeout=10))
        else:
            list(ch.unary_stream(path)(garbage, timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert _metric(stack, f'rtvol_grpc_undecodable_total{{method="{path}"}}') == before + 1
    log = stack.log.read_text()
    assert log.count(f"undecodable request to {path}") == 1 and "Traceback" not in log
