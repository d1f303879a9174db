"""Exports: the candles of a query streamed as CSV or NDJSON, row by row from the
repository's server-side cursor, in batches, in constant memory."""

import csv
import io
from collections.abc import AsyncIterator

import msgspec
from litestar.response import Stream

from marketdata.domain.candles import Candle

_encode = msgspec.json.Encoder().encode
_CSV_HEADER = b"ticker,tf_min,ts,open,high,low,close,volume,openint\n"
_BATCH = 1000


def output_format(requested: str | None, accept: str | None) -> str:
    """`format` when given, else what `Accept` asks for; JSON by default."""
    if requested is not None:
        return requested
    accepted = (accept or "").lower()
    if "text/csv" in accepted:
        return "csv"
    if "ndjson" in accepted or "jsonl" in accepted:
        return "ndjson"
    return "json"


async def _csv_lines(candles: AsyncIterator[Candle]) -> AsyncIterator[bytes]:
    yield _CSV_HEADER
    batch: list[tuple[object, ...]] = []
    async for c in candles:
        stamp = c.ts.isoformat().replace("+00:00", "Z")
        batch.append(
            (c.ticker, c.tf_min, stamp, c.open, c.high, c.low, c.close, c.volume, c.openint)
        )
        if len(batch) >= _BATCH:
            yield _csv_chunk(batch)
            batch.clear()
    if batch:
        yield _csv_chunk(batch)


def _csv_chunk(rows: list[tuple[object, ...]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def _ndjson_lines(candles: AsyncIterator[Candle]) -> AsyncIterator[bytes]:
    batch: list[bytes] = []
    async for candle in candles:
        batch.append(_encode(candle))
        if len(batch) >= _BATCH:
            yield b"\n".join(batch) + b"\n"
            batch.clear()
    if batch:
        yield b"\n".join(batch) + b"\n"


def streamed(candles: AsyncIterator[Candle], output: str) -> Stream:
    # Litestar adds the charset to text/* types itself.
    if output == "csv":
        return Stream(_csv_lines(candles), media_type="text/csv")
    return Stream(_ndjson_lines(candles), media_type="application/x-ndjson")
