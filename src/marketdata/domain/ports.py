"""What the domain needs from the outside world, as Protocols the adapters implement."""

import enum
from collections.abc import AsyncGenerator, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ingest import Batch, IngestOptions, Row, Rows, WriteResult
from marketdata.domain.timeframes import Holdings, Resample


class Columnar(enum.StrEnum):
    """The columnar formats candles are exported in."""

    PARQUET = "parquet"
    ARROW = "arrow"  # an Arrow IPC stream


class Export(msgspec.Struct, frozen=True):
    """What an export reads, checked: one series' candles, or its bars as `resample` and
    `options` make them; `after`: the last bar of the page before (a cursor)."""

    ticker: str
    tf_min: int
    time_range: TimeRange | None = None
    order: Order = Order.ASC
    limit: int | None = None
    resample: Resample | None = None
    options: BarOptions = PLAIN
    after: datetime | None = None


class Coverage(msgspec.Struct, frozen=True):
    tf_min: int
    first: datetime
    last: datetime
    count: int


class Gap(msgspec.Struct, frozen=True):
    """No candle strictly between `after` and `before`."""

    after: datetime
    before: datetime
    minutes: float


class CandleRepository(Protocol):
    """Read side of the candle store. Raises StoreUnavailable when the store cannot answer."""

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        """Distinct tickers starting with `prefix` (case-insensitive, literal), sorted."""
        ...

    async def candles(
        self,
        ticker: str,
        tf_min: int,
        limit: int,
        order: Order,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
    ) -> list[Candle]:
        """The oldest `limit` candles ascending (ASC) or the newest descending (DESC);
        with `resample`, buckets of tf_min made from the stored `source_tf` candles; cut,
        kept to a session and filled as `options` say (ts_close set when a label is)."""
        ...

    async def candle_range(
        self,
        ticker: str,
        tf_min: int,
        time_range: TimeRange,
        limit: int,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
    ) -> list[Candle]:
        """Candles with start <= ts <= end, ascending, at most `limit`. Resampled buckets
        are returned only when they lie entirely inside the range. `after`: the last bar
        of the page before, the gap from which is filled (with `fill`)."""
        ...

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        """The catalog's series of these tickers and the rollup timeframes kept (one read,
        never a count of candles; none when this process knows them already)."""
        ...

    async def catalog_version(self) -> str:
        """A version of the whole catalog: it changes whenever a series is written, added
        or removed."""
        ...

    def known(self, ticker: str) -> Holdings | None:
        """A ticker's holdings when this process knows them up to date, without I/O."""
        ...

    def export(self, what: Export) -> AsyncGenerator[Candle, None]:
        """Like candles/candle_range, without a cap, in constant memory (for exports)."""
        ...

    def export_columns(self, output: Columnar, what: Export) -> AsyncGenerator[bytes, None]:
        """The same candles as `export`, encoded in a columnar format, in record batches
        (labelled as asked): nothing at all when there are none."""
        ...

    async def gaps(self, ticker: str, tf_min: int, min_gap: timedelta, limit: int) -> list[Gap]:
        """Consecutive candles further apart than `min_gap`, oldest first."""
        ...


class CandleFile(Protocol):
    """A file of candles, read once: its rows parsed and checked as they are read (a bad
    one raises BadRow naming file, line and field)."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int:
        """Bytes in the file."""
        ...

    @property
    def consumed(self) -> int:
        """Bytes read so far (for a progress bar)."""
        ...

    def rows(self) -> Iterator[Row] | Iterator[Batch]: ...


class ColumnarReader(Protocol):
    def batches(self, data: bytes, options: IngestOptions, name: str) -> Iterator[Batch]:
        """Candles in an Arrow IPC stream, read and checked in batches (a bad one raises
        BadRow naming its row, from 1, and column)."""
        ...


class CandleWriter(Protocol):
    async def write(self, rows: Rows) -> WriteResult:
        """Upsert every row, all or nothing: an error from `rows` (a BadRow) or from the
        store leaves the table as it was. Rows equal to what is stored change nothing."""
        ...

    async def delete(self, ticker: str, tf_min: int, time_range: TimeRange) -> int:
        """Delete the series' candles with start <= ts <= end, all or nothing; how many."""
        ...


class StoreHealth(Protocol):
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        ...

    async def pending_migrations(self) -> list[str]:
        """Schema migrations not applied yet (empty when the schema is up to date)."""
        ...


class ReplicaStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One streaming replica as last seen: whether it serves reads and, when not, why."""

    name: str  # host:port, never credentials
    up: bool  # in service: reachable, a standby, within the lag allowed, no failed read held
    reason: str | None = None  # why it is out
    lag_seconds: float | None = None  # behind the primary, 0 when it lacks nothing; None: unknown
    replay_lsn: int | None = None  # the WAL position it had replayed when last polled
    reads: int = 0  # reads sent to it


class ReplicaHealth(Protocol):
    def status(self) -> list[ReplicaStatus]:
        """Every configured replica, in the configured order (none configured: empty)."""
        ...
