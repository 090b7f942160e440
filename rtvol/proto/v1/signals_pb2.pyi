from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(_message.Message):
    __slots__ = ("down", "flat", "up")
    DOWN_FIELD_NUMBER: _ClassVar[int]
    FLAT_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    down: float
    flat: float
    up: float
    def __init__(self, down: _Optional[float] = ..., flat: _Optional[float] = ..., up: _Optional[float] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("stock_id", "rv", "direction", "momentum", "kelly_fraction", "model", "version", "tier", "feature_age_ms", "stale", "error", "window_version", "received_us", "hops_us")
    STOCK_ID_FIELD_NUMBER: _ClassVar[int]
    RV_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    KELLY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WINDOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_US_FIELD_NUMBER: _ClassVar[int]
    HOPS_US_FIELD_NUMBER: _ClassVar[int]
    stock_id: int
    rv: float
    direction: Direction
    momentum: float
    kelly_fraction: float
    model: str
    version: str
    tier: int
    feature_age_ms: float
    stale: bool
    error: str
    window_version: int
    received_us: int
    hops_us: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stock_id: _Optional[int] = ..., rv: _Optional[float] = ..., direction: _Optional[_Union[Direction, _Mapping]] = ..., momentum: _Optional[float] = ..., kelly_fraction: _Optional[float] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., tier: _Optional[int] = ..., feature_age_ms: _Optional[float] = ..., stale: _Optional[bool] = ..., error: _Optional[str] = ..., window_version: _Optional[int] = ..., received_us: _Optional[int] = ..., hops_us: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("stock_ids", "max_staleness_ms", "kelly", "request_id", "traceparent")
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    KELLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    max_staleness_ms: int
    kelly: bool
    request_id: str
    traceparent: str
    def __init__(self, stock_ids: _Optional[_Iterable[int]] = ..., max_staleness_ms: _Optional[int] = ..., kelly: _Optional[bool] = ..., request_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("signals", "request_id", "error")
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[Signal]
    request_id: str
    error: str
    def __init__(self, signals: _Optional[_Iterable[_Union[Signal, _Mapping]]] = ..., request_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SignalBatch(_message.Message):
    __slots__ = ("signals",)
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[Signal]
    def __init__(self, signals: _Optional[_Iterable[_Union[Signal, _Mapping]]] = ...) -> None: ...

class SignalColumns(_message.Message):
    __slots__ = ("stock_id", "rv", "direction", "momentum", "tier", "feature_age_ms", "stale", "window_version", "received_us", "name", "models", "versions", "hops_us", "others")
    STOCK_ID_FIELD_NUMBER: _ClassVar[int]
    RV_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_US_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    HOPS_US_FIELD_NUMBER: _ClassVar[int]
    OTHERS_FIELD_NUMBER: _ClassVar[int]
    stock_id: _containers.RepeatedScalarFieldContainer[int]
    rv: _containers.RepeatedScalarFieldContainer[float]
    direction: _containers.RepeatedScalarFieldContainer[float]
    momentum: _containers.RepeatedScalarFieldContainer[float]
    tier: _containers.RepeatedScalarFieldContainer[int]
    feature_age_ms: _containers.RepeatedScalarFieldContainer[float]
    stale: _containers.RepeatedScalarFieldContainer[bool]
    window_version: _containers.RepeatedScalarFieldContainer[int]
    received_us: _containers.RepeatedScalarFieldContainer[int]
    name: _containers.RepeatedScalarFieldContainer[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.RepeatedScalarFieldContainer[str]
    hops_us: _containers.RepeatedScalarFieldContainer[int]
    others: _containers.RepeatedCompositeFieldContainer[Signal]
    def __init__(self, stock_id: _Optional[_Iterable[int]] = ..., rv: _Optional[_Iterable[float]] = ..., direction: _Optional[_Iterable[float]] = ..., momentum: _Optional[_Iterable[float]] = ..., tier: _Optional[_Iterable[int]] = ..., feature_age_ms: _Optional[_Iterable[float]] = ..., stale: _Optional[_Iterable[bool]] = ..., window_version: _Optional[_Iterable[int]] = ..., received_us: _Optional[_Iterable[int]] = ..., name: _Optional[_Iterable[int]] = ..., models: _Optional[_Iterable[str]] = ..., versions: _Optional[_Iterable[str]] = ..., hops_us: _Optional[_Iterable[int]] = ..., others: _Optional[_Iterable[_Union[Signal, _Mapping]]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("stock_ids", "all", "hops")
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    all: bool
    hops: bool
    def __init__(self, stock_ids: _Optional[_Iterable[int]] = ..., all: _Optional[bool] = ..., hops: _Optional[bool] = ...) -> None: ...
