"""A replay's live tail: the candles committed after its history, sent once each.

The subscription begins where the history ends; the pages after the last bar are then read
once more, and a bar committed in between comes from them, from the subscription, or both:
what those pages sent is remembered (key and revision) until the replay goes live, so that
the subscription's copy is dropped.
"""

from collections.abc import Sequence

from marketdata.domain.candles import Candle
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.ports import LiveFeed, Subscription
from marketdata.domain.replay.selection import ReplayKey, Stream, key_of


class LiveTail:
    def __init__(self, feed: LiveFeed, capacity: int, wake: Wake) -> None:
        self._feed = feed
        self._capacity = capacity
        self._wake = wake
        self._subscription: Subscription | None = None
        self._since: set[tuple[ReplayKey, int]] = set()

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def subscribe(self, streams: Sequence[Stream]) -> None:
        if self._subscription is None:
            self._subscription = self._feed.subscribe(streams, self._capacity, self._wake)

    def played(self, candles: Sequence[Candle]) -> None:
        """Candles of the history sent after subscribing."""
        if self._subscription is not None:
            self._since.update((key_of(c), c.revision) for c in candles)

    def arrived(self, most: int) -> list[Candle]:
        """What was committed since, not sent already (raises TooSlow when cut)."""
        assert self._subscription is not None
        return [
            c for c in self._subscription.take(most) if (key_of(c), c.revision) not in self._since
        ]

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self._since.clear()
