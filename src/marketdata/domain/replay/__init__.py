"""The replay engine: pure domain code over three ports (a ReplaySource of candle pages, a
Clock, a ReplaySink), so that hours of replay run in milliseconds on a virtual clock in the
tests. `session` plays one replay; `selection` says what it plays, `pacing` how fast,
`commands` what a client may ask while it plays, `paging` how its candles are read, `ports`
what it needs from outside."""

from marketdata.domain.replay.commands import (
    Ack,
    ChangePace,
    Command,
    Pause,
    Resume,
    Seek,
    Step,
    Stop,
)
from marketdata.domain.replay.pacing import Pacing, Wake
from marketdata.domain.replay.paging import pages, steps
from marketdata.domain.replay.ports import (
    Clock,
    LiveFeed,
    ReplaySink,
    ReplaySource,
    ReplayStatus,
    Subscription,
    Writes,
)
from marketdata.domain.replay.selection import (
    MAX_TICKERS,
    ReplayKey,
    ReplaySelection,
    Stream,
    key_of,
    planned,
)
from marketdata.domain.replay.session import MAX_BATCH, Outcome, ReplaySession

__all__ = [
    "MAX_BATCH",
    "MAX_TICKERS",
    "Ack",
    "ChangePace",
    "Clock",
    "Command",
    "LiveFeed",
    "Outcome",
    "Pacing",
    "Pause",
    "ReplayKey",
    "ReplaySelection",
    "ReplaySession",
    "ReplaySink",
    "ReplaySource",
    "ReplayStatus",
    "Resume",
    "Seek",
    "Step",
    "Stop",
    "Stream",
    "Subscription",
    "Wake",
    "Writes",
    "key_of",
    "pages",
    "planned",
    "steps",
]
