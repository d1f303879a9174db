"""Candle files on disk: gzip detected by content, lines read as CSV, rows parsed lazily."""

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, Row, parser_for


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

    @property
    def consumed(self) -> int:
        return self._counter.consumed if self._counter else 0

    def rows(self) -> Iterator[Row]:
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
                yield from self._parse(reader)
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
