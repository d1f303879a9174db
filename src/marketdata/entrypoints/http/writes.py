"""Writes (`POST /candles`, its handler in candles.py): API keys, and the body decoded at the
edge into rows for the same import use case as `marketdata ingest`."""

import hmac
import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException

from marketdata.domain.candles import Candle, parse_timestamp
from marketdata.domain.imports import CandleImport
from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, Row, Rows, row_of
from marketdata.domain.layouts import rows_from_csv
from marketdata.domain.ports import ColumnarReader
from marketdata.entrypoints.http.docs import INTERNAL, UNAVAILABLE, spec
from marketdata.entrypoints.schemas import (
    CandleIn,
    DeletedBody,
    ErrorBody,
    ValidationErrorBody,
    WrittenBody,
)
from marketdata.entrypoints.settings import Settings

BODY = "body"
_json_list = msgspec.json.Decoder(list[CandleIn])
_json_one = msgspec.json.Decoder(CandleIn)


def authorize(header: str | None, keys: list[str]) -> None:
    """Bearer API keys, compared in constant time; 401 without one, 403 with a wrong one."""
    if not keys:
        raise PermissionDeniedException("writes are disabled: no API_KEYS are configured")
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    supplied = token.strip().encode()
    # every key is compared, so the time taken does not tell which one nearly matched
    matches = [hmac.compare_digest(supplied, key.encode()) for key in keys]
    if not any(matches):
        raise PermissionDeniedException("the API key is not valid")


def _decode_error(error: msgspec.ValidationError | msgspec.DecodeError, line: int) -> BadRow:
    """msgspec's message (`Expected int, got str - at $[2].close`) as a BadRow naming the
    field."""
    text = str(error).replace("`", "")
    field = text.rsplit(" - at $", 1)[1].lstrip("[0123456789].") if " - at $" in text else ""
    if missing := re.search(r"missing required field (\w+)", text):
        field = missing[1]
    return BadRow(BODY, line, field or "row", text.split(" - at ")[0])


def _candle(c: CandleIn) -> Candle:
    return Candle(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close, c.volume, c.openint)


def rows_from_json(body: bytes) -> list[Row]:
    """A JSON array of candles; a bad one is named by its 1-based position ("body:3: ...")."""
    try:
        candles = _json_list.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        position = re.search(r"at `\$\[(\d+)\]", str(error))
        raise _decode_error(error, int(position[1]) + 1 if position else 1) from None
    return [row_of(_candle(candle), BODY, i) for i, candle in enumerate(candles, 1)]


def rows_from_ndjson(body: bytes) -> list[Row]:
    """One JSON candle per line; blank lines are skipped."""
    rows = []
    for line, text in enumerate(body.splitlines(), 1):
        if not text.strip():
            continue
        try:
            candle = _json_one.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise _decode_error(error, line) from None
        rows.append(row_of(_candle(candle), BODY, line))
    return rows


ARROW_STREAM = "application/vnd.apache.arrow.stream"


def rows_of(body: bytes, media_type: str, bodies: ColumnarReader) -> Rows:
    if media_type == ARROW_STREAM:
        return bodies.batches(body, IngestOptions(), BODY)
    if media_type in (
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/json-seq",
    ):
        return rows_from_ndjson(body)
    if media_type in ("text/csv", "application/csv", "text/plain"):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadFile("body: not UTF-8 text") from None
        return rows_from_csv(text, IngestOptions(), BODY)
    if media_type in ("application/json", ""):
        return rows_from_json(body)
    raise UnsupportedMediaType(media_type)


class UnsupportedMediaType(HTTPException):
    status_code = 415

    def __init__(self, media_type: str) -> None:
        super().__init__(
            f"Content-Type {media_type!r} is not supported: use application/json (a list of "
            f"candles), application/x-ndjson, text/csv or {ARROW_STREAM}"
        )


WRITE_RESPONSES = {
    401: spec(ErrorBody, "No API key", {"error": "an API key is required: ..."}),
    403: spec(
        ErrorBody,
        "Wrong API key, or writes disabled",
        {"error": "the API key is not valid"},
    ),
    413: spec(ErrorBody, "Body over MAX_BODY_BYTES", {"error": "Request Entity Too Large"}),
    415: spec(ErrorBody, "Unsupported Content-Type", {"error": "Content-Type ..."}),
    422: spec(
        ValidationErrorBody,
        "A row cannot be read or fails OHLC sanity",
        {
            "error": "body:3: close: close 5 is outside low..high 0.5..2",
            "detail": [
                {
                    "loc": ["body", "3", "close"],
                    "msg": "close 5 is outside low..high",
                    "type": "value_error",
                }
            ],
        },
    ),
    500: INTERNAL,
    503: UNAVAILABLE,
}


async def write(
    request: Request[Any, Any, Any],
    settings: Settings,
    imports: CandleImport,
    bodies: ColumnarReader,
) -> WrittenBody:
    """Authorize, decode the body, write it all or nothing."""
    authorize(request.headers.get("authorization"), settings.api_key_list)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    result = await imports.load(rows_of(await request.body(), media_type, bodies))
    request.app.state.metrics.rows_ingested.inc(result.inserted + result.updated)
    return WrittenBody(result.rows, result.inserted, result.updated, result.unchanged)


async def delete(
    request: Request[Any, Any, Any],
    settings: Settings,
    imports: CandleImport,
    ticker: str,
    tf_min: int,
    start: str,
    end: str,
) -> DeletedBody:
    """Authorize, then delete the range of one series, all or nothing."""
    authorize(request.headers.get("authorization"), settings.api_key_list)
    deleted = await imports.delete(
        ticker, tf_min, parse_timestamp(start, "start"), parse_timestamp(end, "end")
    )
    return DeletedBody(deleted)
