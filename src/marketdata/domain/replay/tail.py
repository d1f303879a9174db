"""A replay's live tail: what is committed after its history, sent once each.

The subscription begins when the history has played; the history is then played once more
from its last bar up to what the catalog shows was there by then (`live_bound`), and the
replay goes live, whatever keeps arriving: a bar committed meanwhile comes from those pages,
from the subscription, or both, and what the pages sent is remembered (key and revision)
until the replay goes live, so that the subscription's copy is dropped.
"""

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from marketdata.domain.candles import Candle, LiveEvent
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.ports import LiveFeed, Subscription
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, Stream, key_of
from marketdata.domain.timeframes import Holdings

_LAST_TF = 2**31 - 1
_LAST_TICKER = "\U0010ffff"


def live_bound(selection: ReplaySelection, held: Holdings) -> ReplayKey | None:
    """A key at or after that of every bar the catalog's series make now (read after the
    subscription began): the history played up to it, the rest comes live. A bar closes at
    most its timeframe after its source's last candle opens (a day more for a zone's days
    of 25 hours); None when nothing is stored."""
    closes = []
    for stream in selection.streams:
        source = stream.resample.source_tf if stream.resample is not None else stream.tf_min
        stored = next((s for s in held.of(stream.ticker) if s.tf_min == source), None)
        if stored is not None:
            margin = timedelta(days=1) if stream.resample is not None else timedelta(0)
            closes.append(stored.last + timedelta(minutes=stream.tf_min) + margin)
    return ReplayKey(max(closes), _LAST_TF, _LAST_TICKER) if closes else None


class LiveTail:
    def __init__(self, feed: LiveFeed, wake: Wake) -> None:
        self._feed = feed
        self._wake = wake
        self.cut = asyncio.Event()  # set when the client is cut for reading too slowly
        self.reason: str | None = None  # why
        self._subscription: Subscription | None = None
        self._since: set[tuple[ReplayKey, int]] = set()

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def subscribe(self, streams: Sequence[Stream]) -> None:
        if self._subscription is None:
            self._subscription = self._feed.subscribe(streams, self._wake, self.cut)

    def played(self, candles: Sequence[Candle]) -> None:
        """Candles of the history sent after subscribing."""
        if self._subscription is not None:
            self._since.update((key_of(c), c.revision) for c in candles)
            self._subscription.touch()

    def arrived(self, most: int) -> list[LiveEvent]:
        """What was committed since, not sent already (raises TooSlow when cut)."""
        assert self._subscription is not None
        return [
            event
            for event in self._subscription.take(most)
            if not isinstance(event, Candle) or (key_of(event), event.revision) not in self._since
        ]

    def close(self) -> None:
        if self._subscription is not None:
            self.reason = self._subscription.reason or self.reason
            self._subscription.close()
            self._subscription = None
        self._since.clear()
