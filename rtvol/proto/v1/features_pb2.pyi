from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BookSnapshot(_message.Message):
    __slots__ = ("bid_price1", "ask_price1", "bid_price2", "ask_price2", "bid_size1", "ask_size1", "bid_size2", "ask_size2")
    BID_PRICE1_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE1_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE2_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE2_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE1_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE1_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE2_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE2_FIELD_NUMBER: _ClassVar[int]
    bid_price1: float
    ask_price1: float
    bid_price2: float
    ask_price2: float
    bid_size1: float
    ask_size1: float
    bid_size2: float
    ask_size2: float
    def __init__(self, bid_price1: _Optional[float] = ..., ask_price1: _Optional[float] = ..., bid_price2: _Optional[float] = ..., ask_price2: _Optional[float] = ..., bid_size1: _Optional[float] = ..., ask_size1: _Optional[float] = ..., bid_size2: _Optional[float] = ..., ask_size2: _Optional[float] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("price", "size", "order_count")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    price: float
    size: float
    order_count: int
    def __init__(self, price: _Optional[float] = ..., size: _Optional[float] = ..., order_count: _Optional[int] = ...) -> None: ...

class MarketUpdate(_message.Message):
    __slots__ = ("stock_id", "event_time_us", "sequence", "book", "trade")
    STOCK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BOOK_FIELD_NUMBER: _ClassVar[int]
    TRADE_FIELD_NUMBER: _ClassVar[int]
    stock_id: int
    event_time_us: int
    sequence: int
    book: BookSnapshot
    trade: Trade
    def __init__(self, stock_id: _Optional[int] = ..., event_time_us: _Optional[int] = ..., sequence: _Optional[int] = ..., book: _Optional[_Union[BookSnapshot, _Mapping]] = ..., trade: _Optional[_Union[Trade, _Mapping]] = ...) -> None: ...

class UpdateColumns(_message.Message):
    __slots__ = ("stock_id", "event_time_us", "sequence", "kind", "bid_price1", "ask_price1", "bid_price2", "ask_price2", "bid_size1", "ask_size1", "bid_size2", "ask_size2", "price", "size", "order_count")
    STOCK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE1_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE1_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE2_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE2_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE1_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE1_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE2_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE2_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    stock_id: _containers.RepeatedScalarFieldContainer[int]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    sequence: _containers.RepeatedScalarFieldContainer[int]
    kind: _containers.RepeatedScalarFieldContainer[int]
    bid_price1: _containers.RepeatedScalarFieldContainer[float]
    ask_price1: _containers.RepeatedScalarFieldContainer[float]
    bid_price2: _containers.RepeatedScalarFieldContainer[float]
    ask_price2: _containers.RepeatedScalarFieldContainer[float]
    bid_size1: _containers.RepeatedScalarFieldContainer[float]
    ask_size1: _containers.RepeatedScalarFieldContainer[float]
    bid_size2: _containers.RepeatedScalarFieldContainer[float]
    ask_size2: _containers.RepeatedScalarFieldContainer[float]
    price: _containers.RepeatedScalarFieldContainer[float]
    size: _containers.RepeatedScalarFieldContainer[float]
    order_count: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, stock_id: _Optional[_Iterable[int]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., sequence: _Optional[_Iterable[int]] = ..., kind: _Optional[_Iterable[int]] = ..., bid_price1: _Optional[_Iterable[float]] = ..., ask_price1: _Optional[_Iterable[float]] = ..., bid_price2: _Optional[_Iterable[float]] = ..., ask_price2: _Optional[_Iterable[float]] = ..., bid_size1: _Optional[_Iterable[float]] = ..., ask_size1: _Optional[_Iterable[float]] = ..., bid_size2: _Optional[_Iterable[float]] = ..., ask_size2: _Optional[_Iterable[float]] = ..., price: _Optional[_Iterable[float]] = ..., size: _Optional[_Iterable[float]] = ..., order_count: _Optional[_Iterable[float]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("updates", "columns", "watermark_us")
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_US_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[MarketUpdate]
    columns: UpdateColumns
    watermark_us: int
    def __init__(self, updates: _Optional[_Iterable[_Union[MarketUpdate, _Mapping]]] = ..., columns: _Optional[_Union[UpdateColumns, _Mapping]] = ..., watermark_us: _Optional[int] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("accepted", "rejected", "rejected_by_reason", "messages")
    class RejectedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: int
    rejected_by_reason: _containers.ScalarMap[str, int]
    messages: int
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., rejected_by_reason: _Optional[_Mapping[str, int]] = ..., messages: _Optional[int] = ...) -> None: ...

class GetFeaturesRequest(_message.Message):
    __slots__ = ("stock_ids", "max_staleness_ms")
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    max_staleness_ms: int
    def __init__(self, stock_ids: _Optional[_Iterable[int]] = ..., max_staleness_ms: _Optional[int] = ...) -> None: ...

class GetFeaturesResponse(_message.Message):
    __slots__ = ("windows", "steps", "features", "feature_spec_hash", "stock_ids", "event_time_us", "sequence", "age_ms", "stale", "found")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    windows: bytes
    steps: int
    features: int
    feature_spec_hash: str
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    sequence: _containers.RepeatedScalarFieldContainer[int]
    age_ms: _containers.RepeatedScalarFieldContainer[float]
    stale: _containers.RepeatedScalarFieldContainer[bool]
    found: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, windows: _Optional[bytes] = ..., steps: _Optional[int] = ..., features: _Optional[int] = ..., feature_spec_hash: _Optional[str] = ..., stock_ids: _Optional[_Iterable[int]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., sequence: _Optional[_Iterable[int]] = ..., age_ms: _Optional[_Iterable[float]] = ..., stale: _Optional[_Iterable[bool]] = ..., found: _Optional[_Iterable[bool]] = ...) -> None: ...

class UniverseFilters(_message.Message):
    __slots__ = ("min_price", "max_price", "min_volume", "max_spread")
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    MIN_VOLUME_FIELD_NUMBER: _ClassVar[int]
    MAX_SPREAD_FIELD_NUMBER: _ClassVar[int]
    min_price: float
    max_price: float
    min_volume: float
    max_spread: float
    def __init__(self, min_price: _Optional[float] = ..., max_price: _Optional[float] = ..., min_volume: _Optional[float] = ..., max_spread: _Optional[float] = ...) -> None: ...

class UniverseRequest(_message.Message):
    __slots__ = ("top_k", "filters", "momentum_weight", "volatility_weight")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    filters: UniverseFilters
    momentum_weight: float
    volatility_weight: float
    def __init__(self, top_k: _Optional[int] = ..., filters: _Optional[_Union[UniverseFilters, _Mapping]] = ..., momentum_weight: _Optional[float] = ..., volatility_weight: _Optional[float] = ...) -> None: ...

class UniverseEntry(_message.Message):
    __slots__ = ("stock_id", "score", "volatility", "momentum")
    STOCK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    stock_id: int
    score: float
    volatility: float
    momentum: float
    def __init__(self, stock_id: _Optional[int] = ..., score: _Optional[float] = ..., volatility: _Optional[float] = ..., momentum: _Optional[float] = ...) -> None: ...

class UniverseResponse(_message.Message):
    __slots__ = ("entries", "eligible")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[UniverseEntry]
    eligible: int
    def __init__(self, entries: _Optional[_Iterable[_Union[UniverseEntry, _Mapping]]] = ..., eligible: _Optional[int] = ...) -> None: ...

class GetVwapRequest(_message.Message):
    __slots__ = ("stock_ids",)
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stock_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetVwapResponse(_message.Message):
    __slots__ = ("stock_ids", "vwap", "volume", "time_id", "last_trade_us", "age_ms", "found")
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    VWAP_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TIME_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_TRADE_US_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    vwap: _containers.RepeatedScalarFieldContainer[float]
    volume: _containers.RepeatedScalarFieldContainer[float]
    time_id: _containers.RepeatedScalarFieldContainer[int]
    last_trade_us: _containers.RepeatedScalarFieldContainer[int]
    age_ms: _containers.RepeatedScalarFieldContainer[float]
    found: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, stock_ids: _Optional[_Iterable[int]] = ..., vwap: _Optional[_Iterable[float]] = ..., volume: _Optional[_Iterable[float]] = ..., time_id: _Optional[_Iterable[int]] = ..., last_trade_us: _Optional[_Iterable[int]] = ..., age_ms: _Optional[_Iterable[float]] = ..., found: _Optional[_Iterable[bool]] = ...) -> None: ...

class WindowBatch(_message.Message):
    __slots__ = ("batch", "stock_ids", "windows", "version", "sequence", "event_time_us", "received_us", "end_step", "applied_us", "stored_us", "sent_us", "acked", "lease_us", "rows")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_US_FIELD_NUMBER: _ClassVar[int]
    END_STEP_FIELD_NUMBER: _ClassVar[int]
    APPLIED_US_FIELD_NUMBER: _ClassVar[int]
    STORED_US_FIELD_NUMBER: _ClassVar[int]
    SENT_US_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    LEASE_US_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    batch: int
    stock_ids: _containers.RepeatedScalarFieldContainer[int]
    windows: bytes
    version: _containers.RepeatedScalarFieldContainer[int]
    sequence: _containers.RepeatedScalarFieldContainer[int]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    received_us: _containers.RepeatedScalarFieldContainer[int]
    end_step: _containers.RepeatedScalarFieldContainer[int]
    applied_us: _containers.RepeatedScalarFieldContainer[int]
    stored_us: _containers.RepeatedScalarFieldContainer[int]
    sent_us: int
    acked: int
    lease_us: int
    rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, batch: _Optional[int] = ..., stock_ids: _Optional[_Iterable[int]] = ..., windows: _Optional[bytes] = ..., version: _Optional[_Iterable[int]] = ..., sequence: _Optional[_Iterable[int]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., received_us: _Optional[_Iterable[int]] = ..., end_step: _Optional[_Iterable[int]] = ..., applied_us: _Optional[_Iterable[int]] = ..., stored_us: _Optional[_Iterable[int]] = ..., sent_us: _Optional[int] = ..., acked: _Optional[int] = ..., lease_us: _Optional[int] = ..., rows: _Optional[_Iterable[int]] = ...) -> None: ...

class WatchAck(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: int
    def __init__(self, batch: _Optional[int] = ...) -> None: ...
