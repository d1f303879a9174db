"""Candles in columns (Apache Arrow): Parquet, Feather/Arrow IPC and freqtrade files and
Arrow IPC bodies read and checked in record batches; text files read by Arrow's CSV reader
when it can; batches written for COPY; exports encoded as Parquet or an Arrow IPC stream.

With `columnar_text` and `columnar_export`, the modules that know pyarrow and numpy.
Every check is a vectorized filter here; the words of an error are the domain's
(`check_candle`, the text parsers): the first row a filter rejects is checked again by
them, so a message names the same thing either way.
"""

import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, tzinfo
from itertools import islice
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from marketdata.domain.candles import ticker_of, timeframe_of
from marketdata.domain.errors import InvalidParameter
from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, Row, check_candle
from marketdata.domain.layouts import PERIODS, columns_of

TS = pa.timestamp("us", tz="UTC")
PRICES = ("open", "high", "low", "close", "volume")
SCHEMA = pa.schema(
    [
        ("ticker", pa.string()),
        ("tf_min", pa.int32()),
        ("ts", TS),
        *((name, pa.float64()) for name in PRICES),
        ("openint", pa.int64()),
    ]
)
BATCH_ROWS = 65_536
SUFFIXES = (".parquet", ".pq", ".feather", ".arrow", ".ipc", ".arrows")
# freqtrade's data files: <PAIR>-<timeframe>[-<candle type>].feather|parquet
_FREQTRADE = re.compile(r"^(?P<pair>[^-]+)-(?P<n>\d+)(?P<unit>[mhdwM])(?:-[a-z_]+)?\.")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080, "M": PERIODS["M"]}


class NotFast(Exception):
    """The columnar reading of a text file gave up: the row-by-row parser reads it."""


# -- reading ----------------------------------------------------------------------------


def _zone(tz: tzinfo) -> str | None:
    return None if tz is UTC else str(getattr(tz, "key", tz))


def utc(values: pa.Array | pa.ChunkedArray, tz: tzinfo) -> pa.Array:
    """Timestamps in UTC microseconds from a timestamp, date, epoch number or ISO string
    column; naive ones are in `tz`. Raises NotFast when they cannot be read so."""
    kind = values.type
    try:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            try:
                values = pc.cast(values, pa.timestamp("us"))
            except pa.ArrowInvalid:
                return pc.cast(values, TS)  # ISO 8601 with offsets
            kind = values.type
        if pa.types.is_integer(kind):
            number = pc.cast(values, pa.int64())
            # epoch seconds, milliseconds or microseconds, by magnitude (as parse_time)
            micros = pc.if_else(
                pc.greater_equal(number, 10**14),
                number,
                pc.if_else(
                    pc.greater_equal(number, 10**11),
                    pc.multiply_checked(number, 1000),
                    pc.multiply_checked(number, 1_000_000),
                ),
            )
            return pc.cast(micros, TS)
        if pa.types.is_date(kind):
            values, kind = pc.cast(values, pa.timestamp("us")), pa.timestamp("us")
        if pa.types.is_timestamp(kind):
            if kind.tz is None and (zone := _zone(tz)) is not None:
                values = pc.assume_timezone(values, zone, ambiguous="earliest", nonexistent="raise")
            elif kind.tz is None:
                values = pc.assume_timezone(values, "UTC")
            return pc.cast(values, TS, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise NotFast(str(error)) from None
    raise NotFast(f"a {kind} column is not a time")


def _constant(value: Any, rows: int, kind: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, kind), rows)


def _checked_names(values: pa.Array, name: str, file: str, first: int) -> None:
    """Every distinct ticker or timeframe through the domain's rule (few distinct values)."""
    rule: Callable[[Any], Any] = ticker_of if name == "ticker" else timeframe_of
    for value in pc.unique(values).to_pylist():
        try:
            if value is None:
                raise InvalidParameter(name, "is missing")
            rule(value)
        except InvalidParameter as error:
            at = pc.index(values, value).as_py() if value is not None else _first_null(values)
            reason = f"{value!r}: {error.reason}"
            raise BadRow(file, first + at, name, reason, row=True) from None


def _first_null(values: pa.Array) -> int:
    return int(pc.index(pc.is_null(values), True).as_py())


def checked(
    columns: dict[str, pa.Array],
    options: IngestOptions,
    file: str,
    first: int = 1,
) -> pa.RecordBatch:
    """A record batch in the table's columns from `columns` (ts already UTC; ticker or
    tf_min may be missing when the options give them), every row checked. A bad row raises
    BadRow naming its row (`first` is the batch's first) and column."""
    rows = len(columns["ts"])
    ticker = columns.get("ticker")
    if options.ticker is not None or ticker is None:
        if options.ticker is None:
            raise BadFile(f"{file}: no ticker column: give the ticker (--ticker)")
        ticker = _constant(options.ticker, rows, pa.string())
    tf = columns.get("tf_min")
    if options.tf_min is not None or tf is None:
        if options.tf_min is None:
            raise BadFile(f"{file}: no tf_min column: give the timeframe in minutes (--tf-min)")
        tf = _constant(options.tf_min, rows, pa.int64())
    out: dict[str, pa.Array] = {"ticker": pc.cast(ticker, pa.string())}
    try:
        out["tf_min"] = pc.cast(tf, pa.int64())
        for name in PRICES:
            out[name] = (
                pc.cast(columns[name], pa.float64())
                if name in columns
                else _constant(0.0, rows, pa.float64())
            )
        out["openint"] = (
            pc.cast(columns["openint"], pa.int64())
            if "openint" in columns
            else _constant(0, rows, pa.int64())
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise NotFast(str(error)) from None
    out["ts"] = columns["ts"]
    _checked_names(out["ticker"], "ticker", file, first)
    _checked_names(out["tf_min"], "tf_min", file, first)
    o, h, low, c, v = (out[name] for name in PRICES)
    bad = pc.or_(pc.less(h, low), pc.or_(pc.less(o, low), pc.greater(o, h)))
    bad = pc.or_(bad, pc.or_(pc.less(c, low), pc.greater(c, h)))
    bad = pc.or_(bad, pc.less(v, 0))
    for name in (*PRICES, "ts", "openint"):
        valid = pc.is_valid(out[name])
        if name in PRICES:
            valid = pc.and_(valid, pc.is_finite(out[name]))
        bad = pc.or_kleene(bad, pc.invert(valid))
    if pc.any(pc.fill_null(bad, True)).as_py():
        _reject(out, int(pc.index(pc.fill_null(bad, True), True).as_py()), file, first)
    out["tf_min"] = pc.cast(out["tf_min"], pa.int32())
    return pa.RecordBatch.from_arrays([out[f.name] for f in SCHEMA], schema=SCHEMA)


def _reject(out: dict[str, pa.Array], at: int, file: str, first: int) -> None:
    """Raise the error of row `at` of a batch whose first row is `first`, in the domain's
    words."""
    line = first + at
    values = {name: out[name][at].as_py() for name in SCHEMA.names}
    for name in ("ts", *PRICES, "openint"):
        if values[name] is None:
            raise BadRow(file, line, name, "is missing", row=True)
        if name in PRICES and not math.isfinite(values[name]):
            raise BadRow(file, line, name, f"{values[name]!r} is not a finite number", row=True)
    row = cast(Row, tuple(values[name] for name in SCHEMA.names))
    try:
        check_candle(row, file, line)
    except BadRow as error:
        raise BadRow(error.file, line, error.field, error.reason, row=True) from None
    raise BadRow(file, line, "row", "is not a valid candle", row=True)  # pragma: no cover


def _named(batch: pa.RecordBatch, tz: tzinfo, file: str) -> dict[str, pa.Array]:
    """The columns of a columnar file's batch, by the aliases of the text parser."""
    at = columns_of(batch.schema.names)
    missing = [c for c in ("ts", "open", "high", "low", "close") if c not in at]
    if missing:
        raise BadFile(
            f"{file}: no {', '.join(missing)} column (columns: {', '.join(batch.schema.names)})"
        )
    columns = {name: batch.column(i) for name, i in at.items() if name != "time"}
    try:
        columns["ts"] = utc(columns["ts"], tz)
    except NotFast as error:
        raise BadFile(f"{file}: column {batch.schema.names[at['ts']]!r}: {error}") from None
    return columns


def freqtrade_options(path: Path, options: IngestOptions) -> IngestOptions:
    """freqtrade's `<PAIR>-<timeframe>.feather`: the ticker (`BTC_USDT`) and timeframe
    from the name, unless the options give them."""
    named = _FREQTRADE.match(path.name)
    if named is None:
        return options
    minutes = int(named["n"]) * _UNIT_MINUTES[named["unit"]]
    return IngestOptions(
        tz=options.tz,
        ticker=options.ticker or named["pair"],
        tf_min=options.tf_min or minutes,
    )


class ColumnarCandleFile:
    """CandleFile over a Parquet, Feather (Arrow IPC file) or Arrow IPC stream file, or a
    freqtrade data file: record batches, each checked. `consumed` counts rows' bytes."""

    def __init__(self, path: Path, options: IngestOptions) -> None:
        self.path = path
        self.name = str(path)
        self.options = freqtrade_options(path, options)
        self.size = path.stat().st_size
        self.consumed = 0

    def rows(self) -> Iterator[pa.RecordBatch]:
        first = 1
        try:
            batches, total = self._open()
            for raw in batches:
                if raw.num_rows:
                    columns = _named(raw, self.options.tz, self.name)
                    yield checked(columns, self.options, self.name, first)
                    first += raw.num_rows
                    self.consumed = self.size * (first - 1) // total if total else 0
        except (pa.ArrowInvalid, OSError) as error:
            raise BadFile(f"{self.name}: not a Parquet or Arrow file ({error})") from None
        except NotFast as error:
            raise BadFile(f"{self.name}: {error}") from None
        self.consumed = self.size
        if first == 1:
            raise BadFile(f"{self.name}: the file holds no rows")

    def _open(self) -> tuple[Iterator[pa.RecordBatch], int]:
        """The file's batches, and its rows when known (for progress)."""
        with self.path.open("rb") as probe:
            magic = probe.read(6)
        if magic[:4] == b"PAR1":
            parquet = pq.ParquetFile(self.path)
            return parquet.iter_batches(BATCH_ROWS), parquet.metadata.num_rows
        mapped = pa.memory_map(str(self.path))
        if magic == b"ARROW1":  # Feather v2 is the Arrow IPC file format
            reader = ipc.open_file(mapped)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            return batches, 0
        return iter(ipc.open_stream(mapped)), 0


class ArrowBodies:
    """ColumnarReader: an Arrow IPC stream body, its batches checked (rows numbered from 1
    across the whole stream)."""

    def batches(self, data: bytes, options: IngestOptions, name: str) -> Iterator[pa.RecordBatch]:
        try:
            reader = ipc.open_stream(pa.py_buffer(data))
            first = 1
            for raw in reader:
                if raw.num_rows:
                    yield checked(_named(raw, options.tz, name), options, name, first)
                    first += raw.num_rows
        except pa.ArrowInvalid as error:
            raise BadFile(f"{name}: not an Arrow IPC stream ({error})") from None
        except NotFast as error:
            raise BadFile(f"{name}: {error}") from None


def batch_of_rows(rows: Sequence[Row]) -> pa.RecordBatch:
    """Rows already checked (by the row-by-row parser) as a record batch."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * len(SCHEMA)
    return pa.RecordBatch.from_arrays(
        [pa.array(column, f.type) for column, f in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )


def batched_rows(rows: Iterator[Row]) -> Iterator[pa.RecordBatch]:
    while chunk := list(islice(rows, BATCH_ROWS)):
        yield batch_of_rows(chunk)


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds


def copy_binary(batch: Any) -> bytes:
    """A checked batch as the tuples of PostgreSQL's binary COPY format (between
    COPY_HEADER and COPY_TRAILER), made by numpy a column at a time: each tuple is nine
    length-prefixed big-endian fields. Rows are grouped by their ticker's length (a fixed
    width per group); the staging table's order does not matter."""
    tickers = pc.cast(batch.column(0), pa.binary())
    lengths = pc.binary_length(tickers)
    widths = pc.unique(lengths).to_pylist()
    if len(widths) == 1:
        return _tuples(batch, tickers, widths[0])
    parts = []
    for width in widths:
        mask = pc.equal(lengths, width)
        parts.append(_tuples(batch.filter(mask), tickers.filter(mask), width))
    return b"".join(parts)


def _tuples(batch: Any, tickers: Any, width: int) -> bytes:
    n = batch.num_rows
    fields: list[tuple[str, str]] = [("count", ">i2"), ("ticker_n", ">i4"), ("ticker", f"S{width}")]
    fields += [("tf_n", ">i4"), ("tf", ">i4"), ("ts_n", ">i4"), ("ts", ">i8")]
    for name in PRICES:
        fields += [(f"{name}_n", ">i4"), (name, ">f8")]
    fields += [("openint_n", ">i4"), ("openint", ">i8")]
    out = np.empty(n, np.dtype(fields))
    out["count"] = 9
    out["ticker_n"], out["tf_n"], out["ts_n"] = width, 4, 8
    offsets = np.frombuffer(tickers.buffers()[1], np.int32)[tickers.offset : tickers.offset + n + 1]
    data = tickers.buffers()[2]
    out["ticker"] = np.frombuffer(data, f"S{width}", n, int(offsets[0]))
    out["tf"] = batch.column(1).to_numpy()
    micros = pc.cast(batch.column(2), pa.int64()).to_numpy()
    out["ts"] = micros - _PG_EPOCH_US
    for name in (*PRICES, "openint"):
        out[f"{name}_n"] = 8
        out[name] = batch.column(name).to_numpy()
    return out.tobytes()
