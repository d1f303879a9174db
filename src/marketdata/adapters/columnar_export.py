"""Exports in columns: chunks of candles, each column as the database's binary values end to
end (see `postgres.reads.columns_sql`), turned into Arrow record batches with numpy views
and written as Parquet or an Arrow IPC stream, chunk by chunk, in constant memory."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from marketdata.adapters.columnar import PRICES, SCHEMA, TS
from marketdata.domain.ports import Columnar

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_PARQUET_ROWS = 1 << 16  # rows per Parquet row group (chunks are gathered up to it)


def export_schema(closes: bool, fills: bool) -> pa.Schema:
    """The JSON body's columns and types, with `ts_close` and `filled` when asked for."""
    schema = SCHEMA
    if closes:
        schema = schema.append(pa.field("ts_close", TS))
    if fills:
        schema = schema.append(pa.field("filled", pa.bool_()))
    return schema


def _big(data: bytes, kind: str) -> Any:
    """Big-endian 8-byte values end to end, as native numbers."""
    return np.frombuffer(data, kind).astype(np.int64 if kind == ">i8" else np.float64)


def _times(micros: Any) -> pa.Array:
    """Microseconds since PostgreSQL's epoch as UTC timestamps."""
    return pa.array(micros + _PG_EPOCH_US, pa.int64()).cast(TS)


def _floats(values: Any) -> pa.Array:
    # a filled bar's missing price comes as NaN (stored prices are finite): null here
    return pa.array(values, pa.float64(), from_pandas=True)


class _Sink:
    """Where a writer puts its bytes until they are sent."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class ColumnarEncoder:
    """One export: `add` each chunk (a row of `columns_sql`), `finish` at the end; each
    returns the bytes to send so far."""

    def __init__(
        self,
        output: Columnar,
        ticker: str,
        tf_min: int,
        closes: bool,
        fills: bool,
        descending: bool = False,
    ) -> None:
        self.output, self.ticker, self.tf_min = output, ticker, tf_min
        self.descending = descending
        self.closes, self.fills = closes, fills
        self.schema = export_schema(closes, fills)
        self._sink = _Sink()
        # the writers' many small writes gathered in Arrow's buffer, not one Python call each
        self._file = pa.BufferedOutputStream(pa.PythonFile(self._sink, mode="w"), 1 << 20)
        self._writer: Any = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def _batch(self, chunk: Sequence[Any]) -> pa.RecordBatch:
        rows = int(chunk[0])
        micros = np.frombuffer(chunk[1], ">i8").astype(np.int64)
        steps = np.diff(micros)
        # the rows come in the order asked for; should a plan ever change it, it is restored
        if not (np.all(steps < 0) if self.descending else np.all(steps > 0)):
            order = np.argsort(micros, kind="stable")
            order = order[::-1] if self.descending else order
        else:
            order = None

        def ordered(values: Any) -> Any:
            return values if order is None else values[order]

        columns = [
            pa.repeat(pa.scalar(self.ticker, pa.string()), rows),
            pa.repeat(pa.scalar(self.tf_min, pa.int32()), rows),
            _times(ordered(micros)),
            *(_floats(ordered(_big(data, ">f8"))) for data in chunk[2 : 2 + len(PRICES)]),
            pa.array(ordered(_big(chunk[7], ">i8")), pa.int64()),
        ]
        at = 8
        if self.closes:
            columns.append(_times(ordered(_big(chunk[at], ">i8"))))
            at += 1
        if self.fills:
            columns.append(pa.array(ordered(np.frombuffer(chunk[at], np.uint8).astype(bool))))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def add(self, chunk: Sequence[Any]) -> bytes:
        batch = self._batch(chunk)
        if self.output is Columnar.ARROW:
            if self._writer is None:
                self._writer = ipc.new_stream(self._file, self.schema)
            self._writer.write_batch(batch)
            return self._taken()
        if self._writer is None:  # its magic bytes: the first chunk sends something
            # dictionaries for the constant columns only: prices gain nothing from them
            self._writer = pq.ParquetWriter(
                self._file, self.schema, use_dictionary=["ticker", "tf_min"]
            )
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= _PARQUET_ROWS:
            self._flush_parquet()
        return self._taken()

    def _taken(self) -> bytes:
        self._file.flush()
        return self._sink.take()

    def _flush_parquet(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, self.schema))
        self._pending, self._pending_rows = [], 0

    def finish(self) -> bytes:
        if self.output is Columnar.PARQUET:
            self._flush_parquet()
        if self._writer is not None:
            self._writer.close()
        return self._taken()
