"""A stream of a time-travel session (domain/sessions.py): the bars of a selection sent as
the session's present passes their close, on the session's own clock, following its
controls (pause, resume, seek, speed) made by anyone, through any instance.

Bars are the replay's (`ReplaySource.page`: the one bar builder; with `forming`, a bar made
of finer candles is sent at each of them as it stands, and once more final), read after
the present: what a client reads over REST under the session up to the present, and this
stream from there on, meet without a gap or a duplicate. Nothing waits in a task per
session: a stream sleeps until its next bar is due on the session's clock, or until the
session changes (then it reads the session again; after a seek it goes on from the new
present), or until candles of its tickers are written (then it reads again from the last bar
it sent: a bar written or corrected ahead of the present comes as it stands when due)."""

from collections.abc import Callable
from datetime import datetime, timedelta

from marketdata.domain.ports import Sessions
from marketdata.domain.replay.commands import Command, Stop
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.ports import (
    Clock,
    ReplaySink,
    ReplaySource,
    ReplayStatus,
    Writes,
)
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, key_of, planned
from marketdata.domain.replay.session import Outcome
from marketdata.domain.sessions import TravelSession, wall_now

_LAST_TF = 2**31  # a key after every bar closing at the same time: "after the present"
_LAST_TICKER = "\U0010ffff"


def after_present(present: datetime) -> ReplayKey:
    """The key the bars after `present` follow: those that close later."""
    return ReplayKey(present, _LAST_TF, _LAST_TICKER)


class TravelReplay:
    """One client's stream of a selection under a session. `prepare()` plans it (NotFound
    for a session that is not), `run()` plays it until `apply(Stop())`, or until the session
    ends (DELETE: NotFound)."""

    def __init__(
        self,
        source: ReplaySource,
        clock: Clock,
        sink: ReplaySink,
        selection: ReplaySelection,
        sessions: Sessions,
        session_id: str,
        *,
        page_size: int = 100,
        wall: Callable[[], datetime] = wall_now,
        since: datetime | None = None,
        writes: Writes | None = None,
        follow: Callable[[TravelSession], None] | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._sink = sink
        self.selection = selection
        self._sessions = sessions
        self._id = session_id
        self._page_size = page_size
        self._wall = wall  # the wall clock the session's present is computed from
        # the wall time the client asked for the stream: it starts at the present of then,
        # not of when it has read the session and the catalog (a bar closing in between
        # would be sent to nobody)
        self._since = since
        self._writes = writes
        self._follow = follow  # told each time the session is read
        self._wake = Wake()
        self._changed = True  # read the session before anything
        self._written = False  # candles of the tickers written since the page was read
        self._stopped = False
        self.session: TravelSession | None = None
        self._seq = 0

    async def prepare(self) -> int:
        self._changed = False  # a change heard from here on is read again
        self.session = await self._sessions.get(self._id)
        if self._follow is not None:
            self._follow(self.session)
        held = await self._source.holdings(self.selection.tickers)
        self.selection, _ = planned(self.selection, held)
        return 0

    def _heard(self) -> None:
        self._changed = True
        self._wake.set()

    def _wrote(self) -> None:
        self._written = True
        self._wake.set()

    async def run(self) -> Outcome:
        # listening before the session is read: a control made while the stream starts
        # (reading the session, then the catalog) is heard, and read again
        unwatch = [self._sessions.watch(self._id, self._heard)]
        if self._writes is not None:
            unwatch += [self._writes.watch(t, self._wrote) for t in self.selection.tickers]
        try:
            if self.session is None:
                await self.prepare()
            assert self.session is not None
            since = self._wall() if self._since is None else self._since
            after = after_present(self.session.present(since))
            await self._sink.status(self._status("live"))
            while not self._stopped:
                if self._changed:
                    after = await self._reload(after)
                self._written = False  # a write from here on: read again
                bars = await self._source.page(self.selection, after, self._page_size)
                if not bars:  # nothing after it: until the session changes or a write
                    self._wake.clear()
                    if not (self._changed or self._stopped or self._written):
                        await self._wake.wait()
                    continue
                for bar in bars:
                    key = key_of(bar)
                    if not await self._until(key.close):
                        break
                    await self._sink.candles(self._seq, [bar])
                    self._seq += 1
                    after = key
            return Outcome.STOPPED
        finally:
            for stop in unwatch:
                stop()

    async def apply(self, command: Command) -> None:
        if isinstance(command, Stop):
            self._stopped = True
            self._wake.set()

    def _status(self, message: str) -> ReplayStatus:
        return ReplayStatus(
            message=message,
            tickers=self.selection.tickers,
            tf_min=self.selection.tf_min,
            speed=self.session.clock.speed if self.session is not None else None,
            seq=self._seq,
        )

    async def _until(self, close: datetime) -> bool:
        """Wait until the present reaches `close`: True then; False when stopped, the
        session changed (the caller goes on from where the new clock says) or the tickers'
        candles were written (it reads them again)."""
        while True:
            self._wake.clear()
            if self._stopped or self._changed or self._written:
                return False
            assert self.session is not None
            wall = self._wall()
            if self.session.present(wall) >= close:
                return True
            due = self.session.clock.wall_of(close)
            if due is None:  # paused, or beyond the end
                await self._wake.wait()
            else:
                await self._clock.sleep_until(
                    self._clock.now() + max(0.0, (due - wall).total_seconds()), self._wake
                )

    async def _reload(self, after: ReplayKey) -> ReplayKey:
        """The session read again after a change (NotFound once it has ended): the stream
        goes on where it was, unless the present jumped (a seek): then after the new one."""
        old = self.session
        assert old is not None
        self._changed = False
        new = self.session = await self._sessions.get(self._id)
        if self._follow is not None:
            self._follow(new)
        continuous = old.clock.present(new.clock.anchor_wall) - new.clock.anchor_market
        if abs(continuous) > timedelta(milliseconds=1):
            return after_present(new.present(self._wall()))
        return after
