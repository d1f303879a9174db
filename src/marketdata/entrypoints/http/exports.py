"""Exports: the candles of a query streamed as CSV or NDJSON, row by row from the
repository's server-side cursor, in batches, in constant memory; or as Parquet or an Arrow
IPC stream, whose bytes the repository makes (`streamed_columns`)."""

import csv
import io
import math
from collections.abc import AsyncIterator
from datetime import datetime

import msgspec
from litestar.response import Stream

from marketdata.domain.bar_options import PLAIN, BarOptions, Fill
from marketdata.domain.candles import Candle
from marketdata.domain.ports import Columnar

_encode = msgspec.json.Encoder().encode
_CSV_HEADER = b"ticker,tf_min,ts,open,high,low,close,volume,openint"
_BATCH = 1000


def output_format(requested: str | None, accept: str | None) -> str:
    """`format` when given, else what `Accept` asks for; JSON by default."""
    if requested is not None:
        return requested
    accepted = (accept or "").lower()
    if "application/vnd.apache.parquet" in accepted:
        return "parquet"
    if "application/vnd.apache.arrow.stream" in accepted:
        return "arrow"
    if "text/csv" in accepted:
        return "csv"
    if "ndjson" in accepted or "jsonl" in accepted:
        return "ndjson"
    return "json"


def _iso(ts: datetime | None) -> str:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else ""


def _number(value: float) -> float | str:
    # a bar filled with nulls, or what another program wrote that is no number (JSON's null)
    return value if math.isfinite(value) else ""


async def _csv_lines(
    candles: AsyncIterator[Candle], closes: bool, fills: bool
) -> AsyncIterator[bytes]:
    """CSV rows: with `closes` (a label asked for) a ts_close column, with `fills` (fill
    asked for) a filled one."""
    yield _CSV_HEADER + (b",ts_close" if closes else b"") + (b",filled\n" if fills else b"\n")
    batch: list[tuple[object, ...]] = []
    async for c in candles:
        row: tuple[object, ...] = (
            c.ticker,
            c.tf_min,
            _iso(c.ts),
            *(_number(v) for v in (c.open, c.high, c.low, c.close, c.volume)),
            c.openint,
        )
        if closes:
            row = (*row, _iso(c.ts_close))
        batch.append((*row, str(c.filled).lower()) if fills else row)
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


MEDIA_TYPES = {
    Columnar.PARQUET: "application/vnd.apache.parquet",
    Columnar.ARROW: "application/vnd.apache.arrow.stream",
}


def columnar(output: str) -> Columnar | None:
    return Columnar(output) if output in MEDIA_TYPES else None


def streamed_columns(chunks: AsyncIterator[bytes], output: Columnar) -> Stream:
    extension = "parquet" if output is Columnar.PARQUET else "arrows"
    return Stream(
        chunks,
        media_type=MEDIA_TYPES[output],
        headers={"Content-Disposition": f'attachment; filename="candles.{extension}"'},
    )


def streamed(candles: AsyncIterator[Candle], output: str, options: BarOptions = PLAIN) -> Stream:
    # Litestar adds the charset to text/* types itself.
    if output == "csv":
        closes, fills = options.label is not None, options.fill is not Fill.NONE
        return Stream(_csv_lines(candles, closes, fills), media_type="text/csv")
    return Stream(_ndjson_lines(candles), media_type="application/x-ndjson")
