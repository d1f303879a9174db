"""One client's live events (`Subscription`): a queue bounded by its progress, cut when the
client does not keep up (`LiveLimits`); the live feed puts, the client takes."""

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import msgspec

from marketdata.domain.candles import LiveEvent
from marketdata.domain.errors import TooSlow
from marketdata.domain.replay import Stream, Wake

# An event's share of the bytes a client has not taken yet: about a candle's JSON message
EVENT_BYTES = 256


class LiveLimits(msgspec.Struct, frozen=True):
    """When a client that does not keep up is cut (LIVE_MAX_BYTES, LIVE_STALL_SECONDS): its
    events waiting past `max_bytes`, or none taken for `stall_seconds` while some wait. A
    client that keeps taking is never cut for the size of a burst below `max_bytes`."""

    max_bytes: int = 32 * 2**20
    stall_seconds: float = 10.0


class Subscription:
    """One client's live events: a queue bounded by progress, and a Wake set when something
    arrives; `cut` is set (with the reason) when the client is cut, whatever it is doing."""

    def __init__(
        self,
        on_close: Callable[["Subscription"], None],
        streams: Sequence[Stream],
        limits: LiveLimits,
        wake: Wake,
        cut: asyncio.Event,
    ) -> None:
        self._on_close = on_close
        self.streams = tuple(streams)
        self.limits = limits
        self.wake = wake
        self.cut = cut
        self._queue: deque[LiveEvent] = deque()
        self.progress = time.monotonic()  # the last take, or when the queue was empty
        self.reason: str | None = None

    def put(self, events: Iterable[LiveEvent]) -> None:
        if self.reason is not None:
            return
        if not self._queue:
            self.progress = time.monotonic()  # it had taken everything
        self._queue.extend(events)
        if len(self._queue) * EVENT_BYTES > self.limits.max_bytes:
            self._cut(
                f"more than {self.limits.max_bytes:,} bytes of live events waited for it"
                " (LIVE_MAX_BYTES)"
            )
        self.wake.set()

    def stalled(self, now: float) -> None:
        """Cut the client when events wait and it took none for too long."""
        if self._queue and self.reason is None and now - self.progress > self.limits.stall_seconds:
            self._cut(
                f"it took no live event for {self.limits.stall_seconds:g} s while"
                f" {len(self._queue):,} waited (LIVE_STALL_SECONDS)"
            )

    def touch(self) -> None:
        self.progress = time.monotonic()

    def _cut(self, reason: str) -> None:
        self.reason = reason
        self._queue.clear()  # nothing more is kept for a client that is cut
        self.cut.set()
        self.wake.set()

    def take(self, most: int) -> list[LiveEvent]:
        """What arrived, oldest first, at most `most`; raises TooSlow when cut."""
        if self.reason is not None:
            raise TooSlow(f"the client reads too slowly: {self.reason}")
        taken: list[LiveEvent] = []
        while self._queue and len(taken) < most:
            taken.append(self._queue.popleft())
        self.progress = time.monotonic()
        return taken

    def close(self) -> None:
        self._on_close(self)
