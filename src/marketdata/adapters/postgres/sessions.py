"""Time-travel sessions kept in the database (migrations/0007_sessions.sql).

Each change (made, controlled, ended) is one transaction that notifies `session:<id>` on the
service's channel; every process's live listener hears it and wakes whatever follows that
session here (a stream paced by its clock)."""

from collections.abc import Callable
from typing import Any

from marketdata.adapters.postgres.channel import CHANNEL, Watch
from marketdata.adapters.postgres.pool import Database
from marketdata.domain.errors import NotFound
from marketdata.domain.sessions import SessionClock, TravelSession

PREFIX = "session:"

_COLUMNS = (
    "id, start_ts, anchor_market, anchor_wall, speed, paused, end_ts, tickers, shift, created"
)


def _session(row: tuple[Any, ...]) -> TravelSession:
    sid, start, market, wall, speed, paused, end, tickers, shift, created = row
    return TravelSession(
        id=sid,
        start=start,
        clock=SessionClock(market, wall, speed, paused, end),
        tickers=tuple(tickers),
        shift=shift,
        created=created,
    )


class SessionWatch(Watch):
    """Who follows each session in this process (a stream paced by its clock), by id."""


class PostgresSessions:
    def __init__(self, database: Database, watch: SessionWatch) -> None:
        self._db = database
        self._watch = watch

    async def create(self, session: TravelSession) -> None:
        clock = session.clock
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO travel_sessions ({_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    session.id,
                    session.start,
                    clock.anchor_market,
                    clock.anchor_wall,
                    clock.speed,
                    clock.paused,
                    clock.end,
                    list(session.tickers),
                    session.shift,
                    session.created,
                ),
            )
            await _notify(conn, session.id)

    async def get(self, sid: str) -> TravelSession:
        """The session (NotFound when there is none: never made, or ended by DELETE), read
        each time: a control made through another instance a moment ago is seen at once (its
        notification may still be on its way; a primary-key read costs ~0.1 ms)."""
        rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM travel_sessions WHERE id = %s", (sid,))
        if not rows:
            raise _missing(sid)
        return _session(rows[0])

    async def control(
        self, sid: str, change: Callable[[SessionClock], SessionClock]
    ) -> TravelSession:
        """The session's clock changed by `change` (given the clock as it stands, locked:
        controls from any instance apply one after the other)."""
        async with self._db.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM travel_sessions WHERE id = %s FOR UPDATE", (sid,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise _missing(sid)
            session = _session(row)
            clock = change(session.clock)
            await conn.execute(
                "UPDATE travel_sessions SET anchor_market = %s, anchor_wall = %s, speed = %s,"
                " paused = %s WHERE id = %s",
                (clock.anchor_market, clock.anchor_wall, clock.speed, clock.paused, sid),
            )
            await _notify(conn, sid)
        return TravelSession(
            id=session.id,
            start=session.start,
            clock=clock,
            tickers=session.tickers,
            shift=session.shift,
            created=session.created,
        )

    async def delete(self, sid: str) -> None:
        async with self._db.connection() as conn, conn.transaction():
            cursor = await conn.execute("DELETE FROM travel_sessions WHERE id = %s", (sid,))
            if cursor.rowcount == 0:
                raise _missing(sid)
            await _notify(conn, sid)

    def watch(self, sid: str, wake: Callable[[], None]) -> Callable[[], None]:
        return self._watch.watch(sid, wake)


async def _notify(conn: Any, sid: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, PREFIX + sid))


def _missing(sid: str) -> NotFound:
    return NotFound(f"no session {sid!r} (never made, or ended)")


def changed_session(payload: str) -> str | None:
    """The session a notification announces a change of, if it is one."""
    return payload[len(PREFIX) :] if payload.startswith(PREFIX) else None
