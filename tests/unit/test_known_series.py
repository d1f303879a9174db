"""What a process knows of the catalog: kept only while it can hear of every change."""

from marketdata.adapters.postgres.known import KnownSeries
from marketdata.domain.timeframes import Holdings

HELD = Holdings(series=(), rollups=())


def test_nothing_is_kept_or_trusted_while_the_listener_is_down() -> None:
    known = KnownSeries()
    known.keep("A", HELD, known.epoch)
    assert known.get("A") is None
    known.reset(enabled=True)
    known.keep("A", HELD, known.epoch)
    assert known.get("A") is HELD
    known.reset(enabled=False)
    assert known.get("A") is None


def test_a_read_begun_before_a_change_is_not_kept() -> None:
    known = KnownSeries()
    known.reset(enabled=True)
    began = known.epoch
    known.forget(["B"])  # a change heard while A's holdings were being read
    known.keep("A", HELD, began)
    assert known.get("A") is None
    known.keep("A", HELD, known.epoch)
    assert known.get("A") is HELD
    known.forget(["A"])
    assert known.get("A") is None


def test_nothing_is_trusted_while_a_notification_waits_unread() -> None:
    known = KnownSeries()
    known.reset(enabled=True)
    known.keep("A", HELD, known.epoch)
    waiting = [True]
    known.pending = lambda: waiting[0]
    assert known.get("A") is None
    waiting[0] = False
    assert known.get("A") is HELD


def test_what_was_known_stays_a_hint() -> None:
    """A hint is only a guess (a read checks it): kept through changes and outages."""
    known = KnownSeries()
    assert known.hint("A") is None
    other = Holdings(series=(), rollups=())
    known.keep("A", HELD, known.epoch)  # kept as a hint even while the listener is down
    known.reset(enabled=True)
    known.keep("B", other, known.epoch)
    known.forget(["A", "B"])
    assert known.get("B") is None
    assert known.hint("A") is HELD
    assert known.hint("B") is other
    assert known.hint("NEVER") is other  # never read here: what was read last of another
