"""Text candle files read by Arrow's CSV reader, in batches: Stooq/Finam, CSV with a header,
Binance klines, as the row-by-row parsers read them (`domain.ingest`), without a Python
call per row.

This is a fast path, not a second set of rules: the layout, the header's columns and the
options come from the domain's parsers; when anything here cannot read a batch (a number
or a time that Arrow reads otherwise, a row the checks reject), `NotFast` is raised and
the caller reads the file again row by row, which names the line or reads what was left.
"""

from collections.abc import Iterator, Sequence
from datetime import tzinfo
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from marketdata.adapters.columnar import NotFast, checked, utc
from marketdata.domain.errors import DomainError
from marketdata.domain.ingest import BadRow, IngestOptions
from marketdata.domain.layouts import Layout, binance_options, columns_of, layout_of, period_of

_BLOCK = 1 << 22  # bytes of text per batch


class ArrowText:
    """The batches of one text file, read through a byte stream that tells how far it is."""

    def __init__(self, path: str, gzipped: bool, first: Sequence[str], is_header: bool) -> None:
        self.raw = pa.OSFile(path)
        stream = pa.CompressedInputStream(self.raw, "gzip") if gzipped else self.raw
        self.first, self.is_header = list(first), is_header
        self.names = self.first if is_header else [f"f{i}" for i in range(len(first))]
        self._stream = stream

    def consumed(self) -> int:
        return int(self.raw.tell())

    def reader(self, types: dict[str, pa.DataType], columns: list[str]) -> Any:
        read = pcsv.ReadOptions(
            block_size=_BLOCK,
            column_names=self.names,
            skip_rows=1 if self.is_header else 0,
        )
        # only an empty field is null (the parsers read "NA" as a bad number, not a gap)
        convert = pcsv.ConvertOptions(column_types=types, include_columns=columns, null_values=[""])
        try:
            return pcsv.open_csv(self._stream, read_options=read, convert_options=convert)
        except pa.ArrowInvalid as error:
            raise NotFast(str(error)) from None

    def close(self) -> None:
        self._stream.close()
        self.raw.close()


def text_batches(
    text: ArrowText, options: IngestOptions, file: str, basename: str
) -> Iterator[pa.RecordBatch]:
    """The file's batches, checked; `NotFast` when the row-by-row parser must read it."""
    layout = layout_of(text.first)
    if layout is Layout.STOOQ:
        reader, columns, options = _stooq(text, options)
    elif layout is Layout.BINANCE:
        reader, columns, options = _binance(text, options, basename)
    else:
        reader, columns, options = _csv(text, options)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            raise NotFast(str(error)) from None
        if batch.num_rows:
            try:
                yield checked(columns(batch), options, file)
            except DomainError as error:  # BadRow, BadFile: the slow path names the line
                raise NotFast(error.message) from None


def _stooq(text: ArrowText, options: IngestOptions) -> tuple[Any, Any, IngestOptions]:
    names = [h.strip().strip("<>").upper() for h in text.names]
    at = {name: text.names[i] for i, name in enumerate(names)}
    strings = [at[n] for n in ("TICKER", "PER", "DATE", "TIME") if n in at]
    numbers = [at[n] for n in ("OPEN", "HIGH", "LOW", "CLOSE", "VOL", "OPENINT") if n in at]
    types = {n: pa.string() for n in strings} | {n: pa.float64() for n in numbers}
    reader = text.reader(types, strings + numbers)

    def columns(batch: pa.RecordBatch) -> dict[str, Any]:
        get = batch.column
        date = get(at["DATE"])
        time = get(at["TIME"]) if "TIME" in at else pa.repeat("000000", len(date))
        # YYYYMMDD and HHMMSS exactly, as the parser slices them
        if not pc.all(
            pc.and_(pc.equal(pc.utf8_length(date), 8), pc.equal(pc.utf8_length(time), 6))
        ).as_py():
            raise NotFast("<DATE> or <TIME> not of 8 and 6 characters")
        naive = _parsed(pc.binary_join_element_wise(date, time, ""), "%Y%m%d%H%M%S")
        out: dict[str, Any] = {
            "ts": utc(naive, options.tz),
            "open": get(at["OPEN"]),
            "high": get(at["HIGH"]),
            "low": get(at["LOW"]),
            "close": get(at["CLOSE"]),
        }
        if "VOL" in at:
            out["volume"] = get(at["VOL"])
        if "OPENINT" in at:
            out["openint"] = _whole(get(at["OPENINT"]))
        if "TICKER" in at:
            out["ticker"] = get(at["TICKER"])
        if "PER" in at and options.tf_min is None:
            out["tf_min"] = _periods(get(at["PER"]))
        return out

    return reader, columns, options


def _csv(text: ArrowText, options: IngestOptions) -> tuple[Any, Any, IngestOptions]:
    at = {name: text.names[i] for name, i in columns_of(text.names).items()}
    strings = [at[n] for n in ("ticker", "ts", "time") if n in at]
    numbers = [
        at[n] for n in ("tf_min", "open", "high", "low", "close", "volume", "openint") if n in at
    ]
    types = {n: pa.string() for n in strings} | {n: pa.float64() for n in numbers}
    reader = text.reader(types, strings + numbers)

    def columns(batch: pa.RecordBatch) -> dict[str, Any]:
        get = batch.column
        stamp = get(at["ts"])
        if "time" in at:
            stamp = pc.binary_join_element_wise(stamp, get(at["time"]), " ")
        out: dict[str, Any] = {n: get(at[n]) for n in ("open", "high", "low", "close")}
        out["ts"] = _stamps(stamp, options.tz)
        if "volume" in at:
            out["volume"] = get(at["volume"])
        if "openint" in at:
            out["openint"] = _whole(get(at["openint"]))
        if "tf_min" in at:
            out["tf_min"] = _whole(get(at["tf_min"]))
        if "ticker" in at:
            out["ticker"] = pc.utf8_trim_whitespace(get(at["ticker"]))
        return out

    return reader, columns, options


def _binance(
    text: ArrowText, options: IngestOptions, basename: str
) -> tuple[Any, Any, IngestOptions]:
    named = binance_options(options, basename, basename)
    names = [f"f{i}" for i in range(6)]
    types = {"f0": pa.string()} | {n: pa.float64() for n in names[1:]}
    reader = text.reader(types, names)

    def columns(batch: pa.RecordBatch) -> dict[str, Any]:
        get = batch.column
        out = {
            n: get(f"f{i}") for i, n in enumerate(("ts", "open", "high", "low", "close", "volume"))
        }
        out["ts"] = _stamps(out["ts"], named.tz, epoch_only=True)
        return out

    return reader, columns, named


def _parsed(values: Any, pattern: str) -> Any:
    try:
        return pc.strptime(values, format=pattern, unit="us")
    except pa.ArrowInvalid as error:
        raise NotFast(str(error)) from None


def _stamps(values: Any, tz: tzinfo, *, epoch_only: bool = False) -> Any:
    """A text time column as parse_time reads it: epoch numbers of 9 digits or more, else
    ISO 8601; Arrow's reading of anything else gives up (`NotFast`)."""
    values = pc.utf8_trim_whitespace(values)
    digits = pc.and_(pc.utf8_is_digit(values), pc.greater_equal(pc.utf8_length(values), 9))
    if pc.all(digits).as_py():
        try:
            return utc(pc.cast(values, pa.int64()), tz)
        except pa.ArrowInvalid as error:
            raise NotFast(str(error)) from None
    if epoch_only or pc.any(digits).as_py():
        raise NotFast("epoch and ISO times mixed")
    return utc(values, tz)


def _whole(values: Any) -> Any:
    """Whole numbers read as floats (as the parsers' `_integer`); an empty field is 0."""
    try:
        return pc.cast(pc.fill_null(values, 0.0), pa.int64())
    except pa.ArrowInvalid as error:
        raise NotFast(str(error)) from None


def _periods(values: Any) -> Any:
    """Stooq's <PER> (minutes, or D, W, M) through the domain's rule, per distinct value."""
    distinct = pc.unique(values).to_pylist()
    try:
        minutes = [period_of(v, "", 0) for v in distinct]
    except BadRow as error:
        raise NotFast(error.message) from None
    return pc.take(pa.array(minutes, pa.int64()), pc.index_in(values, pa.array(distinct)))
