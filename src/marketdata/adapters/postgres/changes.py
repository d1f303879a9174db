"""The change feed: what each committed statement changed, for the live listeners of every
process, kept by the database's triggers whoever writes (migrations/0006_any_writer.sql).

Each statement that changes `candles` adds, in its own transaction, a row of `candle_changes`
per series (`written`: the span it wrote, whose rows are read back by their transaction;
`removed`: each run of candles it deleted; `mended`: rebuilt from the table) and sends one
NOTIFY naming its transaction and its tickers. Notifications arrive after the commit, in
commit order, to every listening process. A listener that was away reads the changes it
missed by snapshot (`missed`), and the candles of changes by transaction (`read_back`).
"""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from marketdata.adapters.postgres.buckets import COLUMNS
from marketdata.adapters.postgres.channel import CHANNEL, FLUSH
from marketdata.adapters.postgres.pool import Database
from marketdata.domain.candles import Candle


async def flush(cursor: Any) -> None:
    """In a transaction that changed the catalog or the rollups in bulk: every process
    forgets what it knew of them when it commits."""
    await cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, FLUSH))


class Change(msgspec.Struct, frozen=True):
    """One series changed by one committed statement: `written` (rows first..last of the
    transaction `xid`), `removed` (the run of candles first..last is gone) or `mended`."""

    xid: int
    ticker: str
    tf_min: int
    first: datetime
    last: datetime
    version: int
    kind: str = "written"


class Heard(msgspec.Struct, frozen=True):
    """A notification: its transaction, and the tickers it changed (None: too many to name,
    or all of them, but those `sent` already)."""

    xid: int
    tickers: frozenset[str] | None
    sent: frozenset[str] = frozenset()


def named(heard: Sequence[Heard], change: Change) -> bool:
    """Whether a delivery of `heard` sends `change`: its transaction was heard of its ticker
    here (another of its notifications, heard before or after, sends its other tickers)."""
    return any(
        h.xid == change.xid
        and (change.ticker in h.tickers if h.tickers is not None else change.ticker not in h.sent)
        for h in heard
    )


def parse(payload: str) -> Heard:
    message = json.loads(payload)
    tickers = message.get("t")
    return Heard(int(message["x"]), frozenset(tickers) if tickers is not None else None)


class Delivered:
    """The transactions a listener delivered that its snapshot does not see yet, each with
    the tickers delivered (None: all). Each statement of a transaction notifies its own
    tickers, all at the commit: a transaction may be heard several times."""

    def __init__(self) -> None:
        self._tickers: dict[int, frozenset[str] | None] = {}

    def fresh(self, heard: Heard) -> Heard | None:
        """What `heard` names that was not delivered yet, noted as delivered now."""
        before = self._tickers.get(heard.xid, frozenset())
        if before is None or (heard.tickers is not None and heard.tickers <= before):
            return None
        if heard.tickers is None:  # all of them: those not delivered yet
            self._tickers[heard.xid] = None
            return Heard(heard.xid, None, before)
        self._tickers[heard.xid] = before | heard.tickers
        return Heard(heard.xid, heard.tickers - before)

    def before(self, xid: int) -> str:
        """The transactions heard before `xid` (notifications come in commit order), as an
        array of PostgreSQL's."""
        heard = list(self._tickers)
        return "{" + ",".join(map(str, heard[: heard.index(xid)] if xid in heard else heard)) + "}"

    def sent(self, change: Change) -> bool:
        if change.xid not in self._tickers:
            return False
        tickers = self._tickers[change.xid]
        return tickers is None or change.ticker in tickers

    def past(self, snapshot: "Snapshot") -> "Delivered":
        """Those the snapshot does not see (it sees the others' changes itself)."""
        kept = Delivered()
        kept._tickers = {x: t for x, t in self._tickers.items() if not snapshot.sees(x)}
        return kept


class Snapshot(msgspec.Struct, frozen=True):
    """A PostgreSQL snapshot (`pg_current_snapshot()`): which transactions it sees."""

    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> "Snapshot":
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid: int) -> bool:
        return xid < self.xmin or (xid < self.xmax and xid not in self.running)

    def text(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.running)))}"


async def current(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


_CHANGE = "xid::text, ticker, tf_min, first_ts, last_ts, version, kind"


async def missed(
    conn: psycopg.AsyncConnection[Any], now: Snapshot, before: Snapshot
) -> list[Change]:
    """The changes of the transactions `now` sees and `before` did not, in version order."""
    cursor = await conn.execute(
        f"SELECT {_CHANGE} FROM candle_changes"
        " WHERE pg_visible_in_snapshot(xid, %s::pg_snapshot)"
        " AND NOT pg_visible_in_snapshot(xid, %s::pg_snapshot) ORDER BY version",
        (now.text(), before.text()),
    )
    return [_change(row) for row in await cursor.fetchall()]


def _change(row: Sequence[Any]) -> Change:
    xid, ticker, tf_min, first, last, version, kind = row
    return Change(int(xid), ticker, tf_min, first, last, version, kind)


async def prune(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("DELETE FROM candle_changes WHERE at < clock_timestamp() - interval '1 day'")


# The changes of some transactions, those of the series asked for with the candles each
# wrote (read by series, span and transaction: the index of candles), one row per candle
# (a change without candles: one row of NULLs); the changes of one transaction and series
# are merged first, so that a candle two statements wrote comes once.
_READ_BACK = f"""
WITH ch AS (
    SELECT xid, ticker, tf_min, kind, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
           max(version) AS version
    FROM candle_changes
    WHERE xid = ANY(%(xids)s::xid8[]) AND (ticker, tf_min) IN (
        SELECT * FROM unnest(%(tickers)s::text[], %(tfs)s::int4[]))
    GROUP BY xid, ticker, tf_min, kind, CASE WHEN kind = 'removed' THEN first_ts END
)
SELECT ch.xid::text, ch.ticker, ch.tf_min, ch.first_ts, ch.last_ts, ch.version, ch.kind, k.*
FROM ch LEFT JOIN LATERAL (
    SELECT {COLUMNS}, revision FROM candles c
    WHERE ch.kind = 'written' AND c.ticker = ch.ticker AND c.tf_min = ch.tf_min
      AND c.ts >= ch.first_ts AND c.ts <= ch.last_ts AND c.xact = ch.xid
    ORDER BY c.ts
) k ON true
ORDER BY ch.version, ch.kind, ch.ticker, ch.tf_min, ch.first_ts
"""


async def read_back(
    database: Database, xids: Sequence[int], series: Sequence[tuple[str, int]]
) -> list[tuple[Change, list[Candle]]]:
    """The changes of these transactions to these series, in commit order, each with the
    candles it wrote (their revision set); one query for them all."""
    if not xids or not series:
        return []
    rows = await database.fetch(
        _READ_BACK,
        {
            "xids": [str(x) for x in xids],
            "tickers": [t for t, _ in series],
            "tfs": [tf for _, tf in series],
        },
    )
    found: dict[tuple[int, str, int, str, datetime], tuple[Change, list[Candle]]] = {}
    for row in rows:
        change = _change(row[:7])
        key = (change.xid, change.ticker, change.tf_min, change.kind, change.first)
        _, candles = found.setdefault(key, (change, []))
        if row[7] is not None:
            ticker, tf_min, ts, o, h, low, c, v, oi, revision = row[7:]
            candles.append(Candle(ticker, tf_min, ts, o, h, low, c, v, oi, revision=revision))
    return list(found.values())
