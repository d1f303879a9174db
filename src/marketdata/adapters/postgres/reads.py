"""The read side: plain SQL returning Structs, resampling in SQL, exports (`exports`), and
what is stored read from the series catalog rather than counted."""

import contextlib
import functools
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from marketdata.adapters.postgres import exports
from marketdata.adapters.postgres.bodies import head, json_sql
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.plans import bar_of, plan_sql
from marketdata.adapters.postgres.pool import Database
from marketdata.adapters.postgres.routing import Reads
from marketdata.domain.candles import Candle
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import Columnar, Encoded, Gap, Plan
from marketdata.domain.timeframes import Holdings, Rollup, Series

T = TypeVar("T")

# The catalog holds one row per series: what is stored is read there, never counted.
# The prefix is compared literally (no LIKE patterns) and case-insensitively.
_SYMBOLS = """
SELECT DISTINCT ticker FROM candle_series
WHERE lower(left(ticker, char_length(%(prefix)s))) = lower(%(prefix)s)
ORDER BY ticker LIMIT %(limit)s
"""
# The series of some tickers, and on every row (or on one of NULLs when there are none) the
# rollup timeframes that are complete: one round trip.
_HOLDINGS = """
SELECT s.ticker, s.tf_min, s.first_ts, s.last_ts, s.count, s.version, r.tfs, r.tzs
FROM (SELECT coalesce(array_agg(tf_min ORDER BY tf_min, tz), '{}') AS tfs,
             coalesce(array_agg(tz ORDER BY tf_min, tz), '{}') AS tzs
      FROM rollup_timeframes WHERE ready) r
LEFT JOIN candle_series s ON s.ticker = ANY(%s)
ORDER BY s.ticker, s.tf_min
"""

# The same for the ticker of a read, in one row of arrays, to join the read's own row: the
# plan it was made by is checked against what it read, in its snapshot.
_WITH_HOLDINGS = """
SELECT j.*, h.*, r.*
FROM ({read}) j,
     (SELECT array_agg(tf_min ORDER BY tf_min), array_agg(first_ts ORDER BY tf_min),
             array_agg(last_ts ORDER BY tf_min), array_agg(count ORDER BY tf_min),
             array_agg(version ORDER BY tf_min)
      FROM candle_series WHERE ticker = %(ticker)s) h,
     (SELECT coalesce(array_agg(tf_min ORDER BY tf_min, tz), '{{}}'),
             coalesce(array_agg(tz ORDER BY tf_min, tz), '{{}}')
      FROM rollup_timeframes WHERE ready) r
"""


async def holdings_of(database: Database, tickers: list[str]) -> Holdings:
    """The catalog's rows for these tickers, by ticker then timeframe, and the complete
    rollup timeframes."""
    rows = await database.fetch(_HOLDINGS, (tickers,))
    return Holdings(
        series=tuple(Series(*row[:6]) for row in rows if row[0] is not None),
        rollups=tuple(map(Rollup, rows[0][6], rows[0][7])) if rows else (),
    )


class PostgresCandleRepository:
    """CandleRepository over the pool. Candles are read where `reads` sends them (a replica
    that has replayed far enough, or the primary); the catalog, and so every version and
    ETag, on the primary."""

    def __init__(
        self, database: Database, known: KnownSeries | None = None, reads: Reads | None = None
    ) -> None:
        self._db = database
        self._known = known or KnownSeries()
        self._reads = reads or Reads.primary_only(database)

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        rows = await self._db.fetch(_SYMBOLS, {"prefix": prefix, "limit": limit})
        return [row[0] for row in rows]

    async def bars(self, plan: Plan, extra: int = 0) -> list[Candle]:
        statement, params = plan_sql(plan, extra)
        rows = await self._reads.fetch(statement, params)
        return [bar_of(plan.ticker, plan.tf_min, row, plan.options) for row in rows]

    async def encoded(self, plan: Plan, extra: int = 0) -> Encoded:
        statement, params = plan_sql(plan, extra)
        keep = plan.limit if plan.limit is not None else 2**63 - 1
        options = plan.options
        read = json_sql(statement, options.label, options.fill, plan.order)
        epoch = self._known.epoch
        rows = await self._reads.fetch(
            read if plan.checked else _with_holdings(read),
            params | {"keep": keep, "head": head(plan.ticker, plan.tf_min)},
        )
        count, items, last, *held = rows[0]
        if plan.checked:
            return Encoded(items.encode(), int(count), last)
        holdings = _holdings_in(plan.ticker, *held)
        self._known.keep(plan.ticker, holdings, epoch)
        return Encoded(items.encode(), int(count), last, holdings)

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        if len(tickers) != 1:
            return await holdings_of(self._db, list(tickers))
        if (known := self._known.get(tickers[0])) is not None:
            return known
        epoch = self._known.epoch
        held = await holdings_of(self._db, list(tickers))
        self._known.keep(tickers[0], held, epoch)
        return held

    def known(self, ticker: str) -> Holdings | None:
        return self._known.get(ticker)

    def hint(self, ticker: str) -> Holdings | None:
        return self._known.hint(ticker)

    async def catalog_version(self) -> str:
        # the highest version and the count alone repeat where a transaction that took its
        # version early commits late, swapping one ticker for another: each series counts
        rows = await self._db.fetch(
            "SELECT coalesce(max(version), 0), count(*), coalesce(bit_xor(hashtextextended("
            "ticker || '/' || tf_min || '/' || version, 0)), 0) FROM candle_series",
            (),
        )
        return f"{rows[0][0]}-{rows[0][1]}-{rows[0][2] & 0xFFFFFFFFFFFF:x}"

    async def gaps(self, ticker: str, tf_min: int, min_gap: timedelta, limit: int) -> list[Gap]:
        rows = await self._reads.fetch(
            "SELECT ts, next_ts FROM (SELECT ts, lead(ts) OVER (ORDER BY ts) AS next_ts"
            " FROM candles WHERE ticker = %s AND tf_min = %s) s"
            " WHERE next_ts - ts > %s ORDER BY ts LIMIT %s",
            (ticker, tf_min, min_gap, limit),
        )
        return [Gap(a, b, (b - a).total_seconds() / 60) for a, b in rows]

    def export(self, plan: Plan) -> AsyncGenerator[Candle, None]:
        return self._streamed(lambda database: exports.candles(database, plan))

    def export_columns(self, output: Columnar, plan: Plan) -> AsyncGenerator[bytes, None]:
        return self._streamed(lambda database: exports.encoded(database, output, plan))

    async def _streamed(
        self, stream: Callable[[Database], AsyncGenerator[T, None]]
    ) -> AsyncGenerator[T, None]:
        """An export, from where `reads` sends it; read again on the primary when it fails
        on a replica before anything was sent. Closed early, it closes its stream at once,
        in the reader's task: the stream's connection goes back before the reader ends."""
        database = await self._reads.source()
        sent = False
        try:
            async with contextlib.aclosing(stream(database)) as items:
                async for item in items:
                    sent = True
                    yield item
            return
        except StoreUnavailable as error:
            if sent or not self._reads.retry_on_primary(database, error):
                raise
        async with contextlib.aclosing(stream(self._reads.primary)) as items:
            async for item in items:
                yield item


@functools.lru_cache(maxsize=128)
def _with_holdings(read: bytes) -> bytes:
    return _WITH_HOLDINGS.format(read=read.decode()).encode()


def _holdings_in(
    ticker: str,
    tfs: list[int] | None,
    firsts: list[datetime] | None,
    lasts: list[datetime] | None,
    counts: list[int] | None,
    versions: list[int] | None,
    rollup_tfs: list[int],
    rollup_tzs: list[str],
) -> Holdings:
    series = zip(tfs or (), firsts or (), lasts or (), counts or (), versions or (), strict=True)
    return Holdings(
        series=tuple(Series(ticker, *row) for row in series),
        rollups=tuple(map(Rollup, rollup_tfs, rollup_tzs)),
    )
