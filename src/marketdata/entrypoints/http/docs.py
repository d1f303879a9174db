"""The API described: parameters with their bounds and examples, and every error response
with an example body, shared by the handlers."""

from typing import Annotated, Literal

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter, PathParameter, QueryParameter

from marketdata.domain.candles import NO_CONTROL_CHARACTERS
from marketdata.entrypoints.schemas import (
    CandlesBody,
    ErrorBody,
    UnavailableBody,
    ValidationErrorBody,
)


def spec(model: type, description: str, example: dict[str, object]) -> ResponseSpec:
    return ResponseSpec(
        data_container=model,
        description=description,
        examples=[Example(summary=description, value=example)],
    )


UNAVAILABLE = spec(
    UnavailableBody,
    "PostgreSQL cannot be reached, or the query exceeded DB_COMMAND_TIMEOUT",
    {
        "error": "Service Unavailable",
        "message": "database at db:5432 is unavailable: connection refused",
        "type": "database_connection_error",
    },
)
INVALID = spec(
    ValidationErrorBody,
    "A parameter is missing, of the wrong type or out of bounds",
    {
        "error": "limit: must be between 1 and 5000, got 0",
        "detail": [
            {
                "loc": ["query", "limit"],
                "msg": "must be between 1 and 5000, got 0",
                "type": "value_error",
            }
        ],
    },
)
NOT_FOUND = spec(
    ErrorBody,
    "No candles for that ticker, timeframe or range",
    {"error": "No candles found for ticker 'XYZ' with tf_min=5"},
)
BAD_REQUEST = spec(
    ErrorBody,
    "A datetime is not ISO 8601, or start is after end",
    {"error": "start: 'yesterday' is not an ISO 8601 datetime (e.g. 2024-01-31T09:30:00Z)"},
)
INTERNAL = spec(
    ErrorBody,
    "Unexpected failure; details are in the server log only",
    {"error": "Internal Server Error"},
)

Ticker = Annotated[
    str,
    QueryParameter(
        description="Ticker exactly as stored, e.g. `AMZN.US`.",
        min_length=1,
        max_length=64,
        pattern=NO_CONTROL_CHARACTERS,
        examples=[Example(value="AMZN.US")],
    ),
]
TfMin = Annotated[
    int | None,
    QueryParameter(
        description="Timeframe in minutes; DEFAULT_TF_MIN (5) when omitted.",
        gt=0,
        le=2**31 - 1,
        examples=[Example(value=5)],
    ),
]


Tz = Annotated[
    str | None,
    QueryParameter(
        description="Time zone that aligns resampled daily and weekly buckets (IANA name); "
        "default UTC. Stored timeframes are served as stored.",
        max_length=64,
        examples=[Example(value="America/New_York")],
    ),
]
Format = Annotated[
    Literal["json", "csv", "ndjson", "parquet", "arrow"] | None,
    QueryParameter(
        description="`json` (default), or streamed without the MAX_LIMIT cap: `csv` / "
        "`ndjson` row by row, `parquet` or `arrow` (an Arrow IPC stream) in record batches "
        "with the JSON body's columns and types; also chosen by `Accept: text/csv`, "
        "`application/x-ndjson`, `application/vnd.apache.parquet` or "
        "`application/vnd.apache.arrow.stream`.",
    ),
]
Accept = Annotated[
    str | None,
    HeaderParameter(
        name="Accept",
        required=False,
        description="text/csv or application/x-ndjson stream the result (as format does).",
    ),
]
Label = Annotated[
    Literal["open", "close"] | None,
    QueryParameter(
        description="`ts` is the bar's open time (`open`, the seed's) or its close time "
        "(`close`); given either way, each bar also carries `ts_close`, its close time.",
        examples=[Example(value="close")],
    ),
]
FillMode = Annotated[
    # a string, not a Literal: "null" would be read as None
    str | None,
    QueryParameter(
        pattern="^(none|null|prev)$",
        description="Missing buckets between the first and last bar returned (within "
        '`session` hours for bars shorter than a day) are added, marked `"filled": true`: '
        "`null` prices and volume, or `prev`: a flat bar at the previous close with volume "
        "0. They count toward `limit`. Default `none`.",
        examples=[Example(value="prev")],
    ),
]
DayStart = Annotated[
    str | None,
    QueryParameter(
        description="Local time (in `tz`) at which resampled days and weeks start, HH:MM "
        "(default 00:00): `17:00` with `tz=America/New_York` gives the FX day, 23- and "
        "25-hour days where daylight saving changes.",
        pattern=r"^\d{2}:\d{2}$",
        examples=[Example(value="17:00")],
    ),
]
Session = Annotated[
    str | None,
    QueryParameter(
        description="Local trading hours (in `tz`), HH:MM-HH:MM: only candles opening "
        "inside them are kept, before they are aggregated (no pre- or post-market in an "
        "equity's day). A start after the end wraps midnight.",
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        examples=[Example(value="09:30-16:00")],
    ),
]
RESAMPLING = (
    " When `tf_min` is not stored but a finer stored timeframe divides it, candles are "
    "aggregated from the finest such one (open of the first, max high, min low, close of the "
    "last, sum of volume, last openint), in buckets aligned on the UTC epoch (weeks on a "
    "Monday), or on local time with `tz`."
)
STREAMED = {
    200: ResponseSpec(
        data_container=CandlesBody,
        description="JSON body; with format=csv or ndjson a text/csv or application/x-ndjson "
        "stream of the same candles, one per line; with format=parquet or arrow an "
        "application/vnd.apache.parquet file or application/vnd.apache.arrow.stream",
    )
}


TickerPath = Annotated[
    str,
    PathParameter(
        description="Ticker exactly as stored.", max_length=64, pattern=NO_CONTROL_CHARACTERS
    ),
]
