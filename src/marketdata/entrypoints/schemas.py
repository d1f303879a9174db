"""Every wire body (msgspec Structs) that is not a domain object: HTTP responses, the
replay's query string and messages."""

from datetime import datetime
from typing import Literal

import msgspec

from marketdata.domain.candles import Candle
from marketdata.domain.ports import Coverage
from marketdata.domain.timeframes import Served


class CandleIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A candle as a client writes it (POST /candles): volume and openint may be left out."""

    ticker: str
    tf_min: int
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    openint: int = 0


class HealthBody(msgspec.Struct, omit_defaults=True):
    status: Literal["ok", "degraded"]
    database: Literal["connected", "disconnected"]
    error: str | None = None


class SymbolsBody(msgspec.Struct):
    symbols: list[str]
    count: int


class CandlesBody(msgspec.Struct, omit_defaults=True):
    data: list[Candle]
    count: int
    # a cursor for the next page of /candles/range; absent on the last page (the seed's body)
    next: str | None = None


class ReplicaOut(msgspec.Struct):
    replica: str  # host:port
    reason: str


class ProbeBody(msgspec.Struct, omit_defaults=True):
    status: Literal["alive", "ready", "not_ready"]
    reason: str | None = None
    # replicas left out of reads while the primary serves (only when some are)
    replicas_out: list[ReplicaOut] | None = None


class CoverageBody(msgspec.Struct):
    ticker: str
    timeframes: list[Coverage]  # what is stored
    served: list[Served]  # what can be served: stored, rollup or resampled


class WrittenBody(msgspec.Struct):
    rows: int
    inserted: int
    updated: int
    unchanged: int


class DeletedBody(msgspec.Struct):
    deleted: int


class ErrorBody(msgspec.Struct):
    error: str


class ValidationDetail(msgspec.Struct):
    """One invalid parameter, shaped as the seed's (FastAPI's) validation detail."""

    loc: list[str]
    msg: str
    type: str = "value_error"


class ValidationErrorBody(msgspec.Struct):
    error: str
    detail: list[ValidationDetail]


class UnavailableBody(msgspec.Struct):
    message: str
    error: str = "Service Unavailable"
    type: str = "database_connection_error"


class ReplayQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The query string of `WS /ws/replay`, as the client wrote it (unknown names ignored)."""

    ticker: str | None = None
    tickers: str | None = None
    tf_min: str | None = None  # one timeframe, or several: 5,60
    tz: str | None = None
    day_start: str | None = None
    session: str | None = None
    fill: str | None = None  # none, null or prev: a string, or "null" would be read as None
    label: Literal["open", "close"] | None = None
    forming: bool = False
    live: bool = False
    step_seconds: float | None = None
    speed: float | None = None
    start: str | None = None
    end: str | None = None
    mode: Literal["paced", "lockstep"] = "paced"
    from_seq: int | None = None
    batch: int | None = None


class StatusMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: Literal["STATUS"]
    message: str
    ticker: str | None
    tf_min: int | None
    step_seconds: float | None
    total_candles: int | None
    tickers: list[str] | None = None
    tf_mins: list[int] | None = None
    speed: float | None = None
    seq: int | None = None
    error: str | None = None


class CandleMessage(msgspec.Struct, omit_defaults=True):
    type: Literal["CANDLE"]
    candle: Candle
    seq: int
    final: bool | None = None  # forming bars: whether this is the bar's last update
    revision: int | None = None  # live: a candle written again with other values


class RemovedMessage(msgspec.Struct):
    """Live: the bars of a series opening in [start, end] are gone (their candles deleted);
    those of that span still there follow, each with its revision."""

    type: Literal["REMOVED"]
    ticker: str
    tf_min: int
    start: datetime
    end: datetime
    seq: int


class CandlesMessage(msgspec.Struct, omit_defaults=True):
    """Several candles in one frame (`batch=N`); `seq` is the first one's."""

    type: Literal["CANDLES"]
    candles: list[Candle]
    seq: int
    final: list[bool] | None = None  # forming bars: each one's `final`
