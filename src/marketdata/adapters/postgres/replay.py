"""The replay source: keyset pages in (ts, ticker) order, one pooled connection per page."""

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from marketdata.adapters.postgres.pool import Database
from marketdata.adapters.postgres.reads import (
    CANDLES,
    COLUMNS,
    RANGE,
    ROLLUPS,
    holdings_of,
    resample_params,
    resampled,
)
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.replay import ReplayKey, ReplaySelection
from marketdata.domain.timeframes import Holdings

_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


class PostgresReplaySource:
    """ReplaySource: keyset pages on (ts, ticker), each on a pooled connection of its own,
    so a replay holds no connection between pages whatever its length. Tickers whose
    timeframe is resampled are read as buckets (see `reads.resampled`)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        return await holdings_of(self._db, list(tickers))

    def _buckets(self, selection: ReplaySelection) -> tuple[sql.Composable, list[Any]]:
        """(bucket, ticker) of every candle the replay plays, as one UNION ALL."""
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for ticker in selection.tickers:
            resample = selection.resample_of(ticker)
            window = [selection.start, selection.end]
            if resample is None:
                parts.append(
                    sql.SQL(
                        "SELECT ts AS bucket, ticker FROM candles WHERE ticker = %s"
                        " AND tf_min = %s AND ts >= coalesce(%s::timestamptz, '-infinity')"
                        " AND ts <= coalesce(%s::timestamptz, 'infinity')"
                    )
                )
                params += [ticker, selection.tf_min, *window]
                continue
            p = resample_params(ticker, selection.tf_min, resample, None)
            # a bucket counts only when whole inside the range (as for REST)
            parts.append(
                sql.SQL(
                    "SELECT bucket, ticker FROM (SELECT DISTINCT date_bin(%s, ts AT TIME ZONE"
                    " %s, %s) AT TIME ZONE %s AS bucket, ticker FROM {} WHERE ticker = %s"
                    " AND tf_min = %s{} AND ts >= coalesce(%s::timestamptz, '-infinity')"
                    " AND ts <= coalesce(%s::timestamptz, 'infinity')) r"
                    " WHERE bucket >= coalesce(%s::timestamptz, '-infinity')"
                    " AND bucket + %s <= coalesce(%s::timestamptz, 'infinity')"
                ).format(
                    sql.Identifier(CANDLES if resample.rollup is None else ROLLUPS),
                    sql.SQL("" if resample.rollup is None else " AND tz = %s"),
                )
            )
            last = timedelta(minutes=selection.tf_min - resample.source_tf)
            params += [
                p["stride"],
                p["tz"],
                p["origin"],
                p["tz"],
                ticker,
                resample.read_tf,
                *([] if resample.rollup is None else [resample.rollup_tz]),
                *window,
                selection.start,
                last,
                selection.end,
            ]
        union = sql.SQL(" UNION ALL ").join(parts)
        return sql.SQL("SELECT bucket, ticker FROM ({}) b").format(union), params

    async def count(self, selection: ReplaySelection) -> int:
        query, params = self._buckets(selection)
        rows = await self._db.fetch(sql.SQL("SELECT count(*) FROM ({}) c").format(query), params)
        return int(rows[0][0])

    async def count_before(self, selection: ReplaySelection, ts: datetime) -> int:
        query, params = self._buckets(selection)
        rows = await self._db.fetch(
            sql.SQL("SELECT count(*) FROM ({}) c WHERE bucket < %s").format(query), [*params, ts]
        )
        return int(rows[0][0])

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        query, params = self._buckets(selection)
        rows = await self._db.fetch(
            sql.SQL("{} ORDER BY bucket, ticker OFFSET %s LIMIT 1").format(query),
            [*params, seq],
        )
        return ReplayKey(rows[0][0], rows[0][1]) if rows else None

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        if selection.resampled:
            return await self._resampled_page(selection, after, size)
        # One index range scan per ticker, merged: "ticker = ANY(...) ORDER BY ts" would
        # read every row of the range before sorting. (ts, ticker) > after becomes, for a
        # given ticker, ts >= after.ts when the ticker sorts after after.ticker, else ts >.
        bounds = tuple(
            "" if after is None else ">=" if ticker > after.ticker else ">"
            for ticker in selection.tickers
        )
        params: list[Any] = []
        for ticker in selection.tickers:
            params += [ticker, selection.tf_min, selection.start, selection.end]
            if after is not None:
                params.append(after.ts)
            params.append(size)
        rows = await self._db.fetch(_page_query(bounds), [*params, size])
        return [Candle(*row) for row in rows]

    async def _resampled_page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        """A query per ticker (stored or resampled), merged here."""
        merged: list[Candle] = []
        start = selection.start or datetime(1, 1, 2, tzinfo=UTC)
        end = selection.end or _FAR_FUTURE
        for ticker in selection.tickers:
            resample = selection.resample_of(ticker)
            lo = start
            if after is not None:
                # (ts, ticker) > after: a later ticker may share after.ts, others may not
                step = (
                    timedelta(microseconds=1)
                    if resample is None
                    else timedelta(minutes=selection.tf_min)
                )
                lo = max(lo, after.ts if ticker > after.ticker else after.ts + step)
            if lo > end:
                continue
            window = TimeRange(lo, end)
            if resample is None:
                rows = await self._db.fetch(
                    RANGE, (ticker, selection.tf_min, window.start, window.end, size)
                )
                found = [Candle(*row) for row in rows]
            else:
                found = await resampled(
                    self._db, ticker, selection.tf_min, size, Order.ASC, resample, window
                )
                found = [c for c in found if c.ts >= start]
            merged += found
        merged.sort(key=lambda c: (c.ts, c.ticker))
        return merged[:size]


@functools.lru_cache(maxsize=256)
def _page_query(bounds: tuple[str, ...]) -> bytes:
    """The page query for tickers whose keyset bounds are `bounds` ("" for none): one text
    per shape, built once."""
    parts = [
        f"(SELECT {COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
        " AND ts >= coalesce(%s::timestamptz, '-infinity')"
        " AND ts <= coalesce(%s::timestamptz, 'infinity')"
        f"{f' AND ts {op} %s' if op else ''} ORDER BY ts LIMIT %s)"
        for op in bounds
    ]
    return (
        f"SELECT * FROM ({' UNION ALL '.join(parts)}) merged ORDER BY ts, ticker LIMIT %s".encode()
    )
