"""What the replay engine needs from outside: candle pages, a clock, and a sink for what it
sends."""

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from marketdata.domain.candles import Candle, LiveEvent, Removed
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, Stream
from marketdata.domain.timeframes import Holdings


class ReplaySource(Protocol):
    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        """The catalog's series of these tickers and the rollup timeframes kept."""
        ...

    async def count(self, selection: ReplaySelection) -> int:
        """How many bars the replay has."""
        ...

    async def seq_at(self, selection: ReplaySelection, ts: datetime) -> int:
        """The number of the first bar that opens at or after `ts` (the count of all bars
        when there is none)."""
        ...

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        """The key of bar number `seq` (0-based) in replay order; None past the end."""
        ...

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        """Up to `size` bars strictly after `after` (from the start when None); each with
        its `ts_close` where it is not `tf_min` after its open, and `final` when forming."""
        ...


class Subscription(Protocol):
    """Live events of some streams, committed after it began, in commit order, and in replay
    order within a commit: each stream's bars as history builds them (forming bars of
    resampled streams, each final when its bucket is), a correction with its `revision`,
    and `Removed` for deleted spans."""

    def take(self, most: int) -> list[LiveEvent]:
        """What arrived, oldest first, at most `most`; raises TooSlow once the client is cut
        (its unsent events past their bound, or no progress for too long)."""
        ...

    @property
    def reason(self) -> str | None:
        """Why the client was cut, once it is."""
        ...

    def touch(self) -> None:
        """The client made progress otherwise (the history sent to it while its live
        events wait): no reason to cut it for a stall."""
        ...

    def close(self) -> None: ...


@runtime_checkable  # (checked as a handler's dependency, entrypoints/travel.py)
class LiveFeed(Protocol):
    def subscribe(self, streams: Sequence[Stream], wake: Wake, cut: asyncio.Event) -> Subscription:
        """Start receiving; `wake` is set whenever something arrives, `cut` when the client
        is cut for reading too slowly (whatever it is doing then)."""
        ...


class Writes(Protocol):
    def watch(self, ticker: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` once a transaction that wrote the ticker's candles has committed
        (and whenever such may have gone unheard); returns the way to stop."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float, wake: Wake) -> None:
        """Return at `deadline`, or earlier as soon as `wake` is set."""
        ...


class ReplayStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What a STATUS message reports: the event, and the replay as it stands."""

    message: str
    tickers: tuple[str, ...] = ()
    tf_min: int | None = None
    tf_mins: tuple[int, ...] = ()  # with several timeframes
    step_seconds: float | None = None
    speed: float | None = None
    total: int | None = None
    seq: int | None = None
    error: str | None = None


class ReplaySink(Protocol):
    async def candles(self, seq: int, candles: list[Candle]) -> None:
        """Send bars numbered from `seq` on: a step's, or with `batch` several steps',
        labelled as the caller asked (`ts` the close with `label=close`, `ts_close` only
        with a label); `final` set on forming bars."""
        ...

    async def removed(self, seq: int, removed: Removed) -> None:
        """Send a live `Removed`, numbered `seq`."""
        ...

    async def status(self, status: ReplayStatus) -> None: ...
