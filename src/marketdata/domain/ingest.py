"""What a write of candles is made of, for every source: rows (or batches of them in
columns), the options of a file, the errors that name a bad row, OHLC sanity, and what the
write did. The text layouts of files are in `layouts`."""

import math
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

import msgspec

from marketdata.domain.candles import Candle, ticker_of, timeframe_of, zone_of
from marketdata.domain.errors import DomainError, InvalidParameter

# ticker, tf_min, ts, open, high, low, close, volume, openint: the table's column order
Row = tuple[str, int, datetime, float, float, float, float, float, int]


class BadRow(DomainError):
    """A row that cannot be read; the message names file, line (of a text file; `row` of a
    columnar one, from 1) and field."""

    def __init__(self, file: str, line: int, field: str, reason: str, *, row: bool = False) -> None:
        where = f"{file}: row {line}" if row else f"{file}:{line}"
        super().__init__(f"{where}: {field}: {reason}")
        self.file, self.line, self.field, self.reason = file, line, field, reason


class Batch(Protocol):
    """Rows read and checked in columns by an adapter (an Arrow record batch, in the
    table's column order): written as a whole, with no Python call per row."""

    @property
    def num_rows(self) -> int: ...


# What a write takes: rows one by one (bodies, text files read row by row) or in batches
Rows = Iterable[Row] | Iterable[Batch]


def count_of(item: Row | Batch) -> int:
    return 1 if isinstance(item, tuple) else item.num_rows


class BadFile(DomainError):
    """The file as a whole cannot be read (unknown layout, missing column or option)."""


class IngestOptions(msgspec.Struct, frozen=True):
    tz: tzinfo = UTC
    ticker: str | None = None
    tf_min: int | None = None


def ingest_options(
    tz: str = "UTC", ticker: str | None = None, tf_min: int | None = None
) -> IngestOptions:
    """Options of a file import, checked by the value objects every other caller uses."""
    return IngestOptions(
        tz=UTC if tz == "UTC" else ZoneInfo(zone_of(tz)),
        ticker=ticker_of(ticker) if ticker is not None else None,
        tf_min=timeframe_of(tf_min) if tf_min is not None else None,
    )


class WriteResult(msgspec.Struct, frozen=True):
    """What an all-or-nothing write did: rows read, new candles, changed candles."""

    rows: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def check_candle(row: Row, file: str, line: int) -> Row:
    """OHLC sanity: low <= open, close <= high; volume >= 0; a usable ticker and timeframe."""
    ticker, tf_min, _, open_, high, low, close, volume, _ = row
    try:
        ticker_of(ticker)
    except InvalidParameter as error:
        raise BadRow(file, line, "ticker", f"{ticker!r}: {error.reason}") from None
    try:
        timeframe_of(tf_min)
    except InvalidParameter as error:
        raise BadRow(file, line, "tf_min", f"{tf_min!r}: {error.reason}") from None
    if low > high:
        raise BadRow(file, line, "low", f"low {low:g} is above high {high:g}")
    if not low <= open_ <= high:
        raise BadRow(file, line, "open", f"open {open_:g} is outside low..high {low:g}..{high:g}")
    if not low <= close <= high:
        raise BadRow(file, line, "close", f"close {close:g} is outside low..high {low:g}..{high:g}")
    if volume < 0:
        raise BadRow(file, line, "volume", f"volume {volume:g} is negative")
    if not -(2**63) <= row[8] < 2**63:
        raise BadRow(file, line, "openint", f"{row[8]} does not fit in 64 bits")
    return row


def row_of(candle: Candle, file: str, line: int) -> Row:
    """A candle as a client wrote it (a JSON or NDJSON body), checked: a naive `ts` means
    UTC, prices must be finite and consistent."""
    ts = candle.ts if candle.ts.tzinfo is not None else candle.ts.replace(tzinfo=UTC)
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:
        raise BadRow(file, line, "ts", f"{candle.ts.isoformat()} is out of range") from None
    row: Row = (
        candle.ticker,
        candle.tf_min,
        ts,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.openint,
    )
    for name, value in zip(("open", "high", "low", "close", "volume"), row[3:8], strict=True):
        if not math.isfinite(value):
            raise BadRow(file, line, name, f"{value!r} is not a finite number")
    return check_candle(row, file, line)
