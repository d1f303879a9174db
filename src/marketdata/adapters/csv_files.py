"""Candle files on disk: gzip detected by content; read by Arrow's CSV reader in batches
(`columnar_text`), or as CSV lines parsed row by row where it cannot."""

import csv
import gzip
import io
from collections.abc import Callable, Generator, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa
import structlog

from marketdata.adapters.columnar import SUFFIXES, ColumnarCandleFile, NotFast, batched_rows
from marketdata.adapters.columnar_text import ArrowText, text_batches
from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, Row
from marketdata.domain.layouts import parser_for

log = structlog.get_logger(logger_name="marketdata.ingest")


class _Counting(io.RawIOBase):
    """A read-only byte stream that counts what was read (for a progress bar)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        self.consumed += len(data)
        return len(data)


class TextCandleFile:
    """CandleFile over a text file on disk (Stooq/Finam, CSV, Binance klines; gzip or not):
    rows of one file, iterated once. `consumed`/`size` report progress in file bytes."""

    def __init__(self, path: Path, options: IngestOptions) -> None:
        self.path = path
        self.name = str(path)
        self.options = options
        self.size = path.stat().st_size
        self._counter: _Counting | None = None
        self._fast_consumed = 0

    @property
    def consumed(self) -> int:
        return max(self._counter.consumed if self._counter else 0, self._fast_consumed)

    def rows(self) -> Iterator[pa.RecordBatch]:
        """Batches read by Arrow's CSV reader; when it cannot read the file (or a row is
        bad), the file again row by row from where it stopped (which names a bad line)."""
        first = self._first()
        if first is None:
            raise BadFile(f"{self.name}: the file is empty")
        fields, gzipped = first
        _, is_header = parser_for(fields, self.options, self.name, self.path.name)
        text = ArrowText(str(self.path), gzipped, fields, is_header)
        done = 0
        try:
            for batch in text_batches(text, self.options, self.name, self.path.name):
                yield batch
                done += batch.num_rows
                self._fast_consumed = text.consumed()
        except NotFast as why:
            log.debug("reading row by row", file=self.name, after_rows=done, reason=str(why))
        else:
            return
        finally:
            text.close()
        rows = self._rows()
        for _ in islice(rows, done):
            pass
        yield from batched_rows(rows)

    def _first(self) -> tuple[list[str], bool] | None:
        """The first non-empty row, and whether the file is gzipped."""
        with self.path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        rows = self._reader_rows(lambda reader: (fields for fields in reader if fields))
        try:
            fields: list[str] | None = next(rows, None)
        finally:
            rows.close()
        return None if fields is None else (fields, gzipped)

    def _rows(self) -> Iterator[Row]:
        return self._reader_rows(self._parse)

    def _reader_rows(self, consume: Callable[[Any], Iterator[Any]]) -> Generator[Any, None, None]:
        """`consume` applied to the file's csv reader (gzip or not), its errors named."""
        with self.path.open("rb") as raw:
            self._counter = counter = _Counting(raw)
            magic = raw.read(2)
            raw.seek(0)
            binary = cast(IO[bytes], io.BufferedReader(counter, buffer_size=1 << 16))
            if magic == b"\x1f\x8b":
                binary = cast(IO[bytes], gzip.GzipFile(fileobj=binary))
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            try:
                yield from consume(reader)
            except UnicodeDecodeError:
                raise BadRow(self.name, reader.line_num + 1, "row", "not UTF-8 text") from None
            except (gzip.BadGzipFile, EOFError) as error:
                raise BadFile(f"{self.name}: damaged gzip data ({error})") from None
            except csv.Error as error:
                raise BadRow(self.name, reader.line_num, "row", str(error)) from None

    def _parse(self, reader: Any) -> Iterator[Row]:  # a csv reader (its type is private)
        first = next((fields for fields in reader if fields), None)
        if first is None:
            raise BadFile(f"{self.name}: the file is empty")
        parse, is_header = parser_for(first, self.options, self.name, self.path.name)
        if not is_header:
            yield parse(first, reader.line_num)
        for fields in reader:
            if fields:
                yield parse(fields, reader.line_num)


def open_candle_file(path: Path, options: IngestOptions) -> TextCandleFile | ColumnarCandleFile:
    """A candle file by its content: Parquet or Arrow (by their magic bytes, or a columnar
    suffix), else text."""
    with path.open("rb") as probe:
        magic = probe.read(6)
    if magic[:4] == b"PAR1" or magic == b"ARROW1" or path.suffix.lower() in SUFFIXES:
        return ColumnarCandleFile(path, options)
    return TextCandleFile(path, options)
