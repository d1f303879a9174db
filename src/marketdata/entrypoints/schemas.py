"""Wire bodies (msgspec Structs) that are not domain objects."""

from typing import Literal

import msgspec

from marketdata.domain.candles import Candle


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
