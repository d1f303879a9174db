"""The change log: what each write changed, for the live listeners of every process.

Every write announces, in its own transaction, the series it changed: a row of
`candle_changes` each (ticker, timeframe, the span of the candles it changed, the write's
version) and one NOTIFY with the same, in small payloads. Notifications arrive in commit
order, after the commit, to every listening process: the service's instances, its worker
processes, whoever wrote (`marketdata ingest` included). A listener that was away reads
the changes it missed by snapshot (`missed`), and the candles of changes by series, span
and version (`written`).
"""

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from marketdata.adapters.postgres import catalog
from marketdata.adapters.postgres.buckets import COLUMNS
from marketdata.adapters.postgres.channel import CHANNEL, FLUSH
from marketdata.adapters.postgres.pool import Database
from marketdata.domain.candles import Candle

_PAYLOAD_BYTES = 7000  # PostgreSQL refuses payloads of 8,000 bytes or more

_CHANGED = """
INSERT INTO candle_changes (ticker, tf_min, first_ts, last_ts, version)
SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::timestamptz[],
                     %s::int8[])
RETURNING xid::text
"""


async def flush(cursor: Any) -> None:
    """In a transaction that changed the catalog or the rollups in bulk: every process
    forgets what it knew of them when it commits."""
    await cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, FLUSH))


async def announce(cursor: Any, changes: catalog.Changes, version: int) -> None:
    """In a write's transaction: log the series it changed and notify the listeners
    (delivered when, and if, the transaction commits)."""
    changed = sorted((k, c) for k, c in changes.items() if c.lo is not None and c.hi is not None)
    if not changed:
        return
    await cursor.execute(
        _CHANGED,
        (
            [k[0] for k, _ in changed],
            [k[1] for k, _ in changed],
            [c.lo for _, c in changed],
            [c.hi for _, c in changed],
            [version] * len(changed),
        ),
    )
    row = await cursor.fetchone()
    xid = int(row[0]) if row else 0
    spans = [[k[0], k[1], _iso(c.lo), _iso(c.hi)] for k, c in changed]
    for chunk in _chunks(spans):
        payload = json.dumps({"x": xid, "v": version, "s": chunk}, separators=(",", ":"))
        await cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def _iso(ts: datetime | None) -> str:
    assert ts is not None
    return ts.isoformat()


def _chunks(items: list[list[Any]]) -> Iterable[list[list[Any]]]:
    chunk: list[list[Any]] = []
    size = 0
    for item in items:
        length = len(json.dumps(item)) + 1
        if chunk and size + length > _PAYLOAD_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += length
    if chunk:
        yield chunk


class Change(msgspec.Struct, frozen=True):
    """One series changed by one committed transaction."""

    xid: int
    ticker: str
    tf_min: int
    first: datetime
    last: datetime
    version: int


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


def parse(payload: str) -> tuple[int, list[Change]]:
    """A notification's transaction and changes."""
    message = json.loads(payload)
    xid, version = int(message["x"]), int(message["v"])
    return xid, [
        Change(xid, ticker, tf_min, datetime.fromisoformat(a), datetime.fromisoformat(b), version)
        for ticker, tf_min, a, b in message["s"]
    ]


async def current(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


async def missed(
    conn: psycopg.AsyncConnection[Any], now: Snapshot, before: Snapshot
) -> list[Change]:
    """The changes of the transactions `now` sees and `before` did not, in version order."""
    cursor = await conn.execute(
        "SELECT xid::text, ticker, tf_min, first_ts, last_ts, version FROM candle_changes"
        " WHERE pg_visible_in_snapshot(xid, %s::pg_snapshot)"
        " AND NOT pg_visible_in_snapshot(xid, %s::pg_snapshot) ORDER BY version",
        (now.text(), before.text()),
    )
    return [Change(int(x), t, tf, a, b, v) for x, t, tf, a, b, v in await cursor.fetchall()]


async def prune(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("DELETE FROM candle_changes WHERE at < clock_timestamp() - interval '1 day'")


# The candles of several changes, each read by its series, span and version (the index of
# candles, series by series)
_WRITTEN = f"""
SELECT k.* FROM
unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::timestamptz[], %s::int8[])
    AS c(ticker, tf_min, first_ts, last_ts, version)
CROSS JOIN LATERAL (
    SELECT {COLUMNS}, revision, version FROM candles
    WHERE ticker = c.ticker AND tf_min = c.tf_min AND ts >= c.first_ts AND ts <= c.last_ts
      AND version = c.version
    ORDER BY ts
) k
"""


async def written(
    database: Database, changes: Sequence[Change]
) -> dict[tuple[str, int, int], list[Candle]]:
    """The candles the changes wrote, with their revision, by (ticker, tf_min, version);
    one query for them all."""
    found: dict[tuple[str, int, int], list[Candle]] = {}
    if not changes:
        return found
    rows = await database.fetch(
        _WRITTEN,
        (
            [c.ticker for c in changes],
            [c.tf_min for c in changes],
            [c.first for c in changes],
            [c.last for c in changes],
            [c.version for c in changes],
        ),
    )
    for t, tf, ts, o, h, low, c, v, oi, revision, version in rows:
        found.setdefault((t, tf, version), []).append(
            Candle(t, tf, ts, o, h, low, c, v, oi, revision=revision)
        )
    return found
