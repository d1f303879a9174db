"""The one NOTIFY channel between the service's processes (see `changes` and `live`), and
who follows what it announces."""

import select
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

CHANNEL = "marketdata_candles"
FLUSH = "flush"  # a payload: what every process knows of the catalog is to be read again


def readable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether a listening connection's socket holds something not read yet (a
    notification)."""
    try:
        return bool(select.select([conn.pgconn.socket], [], [], 0)[0])
    except (OSError, ValueError, psycopg.OperationalError):
        return True


class Watch:
    """Who follows what in this process (by a key the channel names), woken by the live
    listener on every change announced, and all at once when changes may have gone unheard
    (the listener reconnected, or a change named too much to list)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Callable[[], None]]] = {}

    def changed(self, key: str) -> None:
        for wake in list(self._watchers.get(key, ())):
            wake()

    def reset(self) -> None:
        for watchers in list(self._watchers.values()):
            for wake in list(watchers):
                wake()

    def watch(self, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` on every change of `key`; returns the way to stop."""
        self._watchers.setdefault(key, set()).add(wake)

        def stop() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[key]

        return stop


class CandleWatch(Watch):
    """Who follows the candles of a ticker (a session's stream reading ahead of its
    present), woken once a transaction that wrote them has committed (the Writes port)."""

    def committed(self, tickers: Iterable[str] | None) -> None:
        """A transaction that wrote these tickers (None: unknown which) committed."""
        if tickers is None:
            self.reset()
        for ticker in tickers or ():
            self.changed(ticker)
