"""What the domain needs from the outside world, as Protocols the adapters implement."""

import enum
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ingest import Batch, IngestOptions, Row, Rows, WriteResult
from marketdata.domain.sessions import SessionClock, TravelSession
from marketdata.domain.timeframes import Holdings, Resample


class Columnar(enum.StrEnum):
    """The columnar formats candles are exported in."""

    PARQUET = "parquet"
    ARROW = "arrow"  # an Arrow IPC stream


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """One read, decided once (`CandleQueries.plan`): what is read (the values checked, the
    defaults applied), from where (`resample`: the source of a timeframe not stored), at
    which version of that source (the ETag), and how (the options)."""

    ticker: str
    tf_min: int
    limit: int | None  # None: an export of every bar
    order: Order = Order.ASC
    time_range: TimeRange | None = None  # what is read: the range, after the cursor
    after: datetime | None = None  # the last bar of the page before (a cursor)
    options: BarOptions = PLAIN
    resample: Resample | None = None
    version: int = 0
    ranged: bool = False  # a range was asked for (`requested`)
    requested: TimeRange | None = None
    empty: bool = False  # nothing is left of the range after the cursor
    # only what has closed by then: bars of stored candles that closed, a bar made of finer
    # ones as it stood then (a time-travel session's present; no rollup, kept from later)
    as_of: datetime | None = None
    # the source and version were read with the catalog; else they are a guess (what this
    # process last knew of the ticker, or that the timeframe is stored) that the read checks
    checked: bool = True

    @property
    def shaped(self) -> bool:
        """Bars made otherwise than the stored candles as they are."""
        return self.resample is not None or self.options.shaped


class Encoded(msgspec.Struct, frozen=True):
    """Bars as the API's JSON carries them, made by the store: the items of the `data`
    array, comma-separated; how many bars were read; the open time of the last one kept
    (the limit's); and, read with them when the plan was not checked, the ticker's holdings
    (to check the plan against)."""

    items: bytes
    count: int
    last: datetime | None
    holdings: Holdings | None = None


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
    """Read side of the candle store. Raises StoreUnavailable when the store cannot answer.
    Every read of bars is of a Plan, in one statement."""

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        """Distinct tickers starting with `prefix` (case-insensitive, literal), sorted."""
        ...

    async def bars(self, plan: Plan, extra: int = 0) -> list[Candle]:
        """The plan's bars, at most its limit (+ `extra`): the oldest ascending or the
        newest descending, or those of its range ascending (resampled buckets only when
        whole inside it); cut, kept to a session and filled as its options say (`ts_close`
        set when a label is; `ts` is the open)."""
        ...

    async def encoded(self, plan: Plan, extra: int = 0) -> Encoded:
        """The same bars as `bars`, encoded as the API's JSON sends them (labelled as
        asked), at most the limit of them encoded, the count of all read; when the plan is
        not `checked`, with the ticker's holdings read in the same statement (one snapshot,
        one round trip)."""
        ...

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        """The catalog's series of these tickers and the rollup timeframes kept (one read,
        never a count of candles)."""
        ...

    async def catalog_version(self) -> str:
        """A version of the whole catalog: it changes whenever a series is written, added
        or removed."""
        ...

    def known(self, ticker: str) -> Holdings | None:
        """A ticker's holdings when this process knows them up to date, without I/O."""
        ...

    def hint(self, ticker: str) -> Holdings | None:
        """The holdings this process last knew of a ticker, up to date or not (a guess
        for a plan the read will check), without I/O."""
        ...

    def export(self, plan: Plan) -> AsyncGenerator[Candle, None]:
        """Like `bars`, without a cap, in constant memory (for exports)."""
        ...

    def export_columns(self, output: Columnar, plan: Plan) -> AsyncGenerator[bytes, None]:
        """The same bars as `export`, encoded in a columnar format, in record batches
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


class Sessions(Protocol):
    """Time-travel sessions, kept where every instance reads the same (domain/sessions.py).
    Each raises NotFound for a session that is not (never made, or ended)."""

    async def create(self, session: TravelSession) -> None: ...

    async def get(self, sid: str) -> TravelSession:
        """The session as it stands (what this process knows of it while it hears every
        change, else read)."""
        ...

    async def control(
        self, sid: str, change: Callable[[SessionClock], SessionClock]
    ) -> TravelSession:
        """The session with its clock changed by `change`, given the clock as it stands;
        controls from any instance apply one after the other."""
        ...

    async def delete(self, sid: str) -> None: ...

    def watch(self, sid: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` whenever the session changes (or may have: its changes could not be
        heard for a while); returns the way to stop."""
        ...
