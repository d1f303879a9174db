"""What a live listener delivered of the transactions it heard: each statement of a
transaction notifies its own tickers, all at the commit, and a cut connection's catch-up
reads back the changes of the others."""

from datetime import UTC, datetime

from marketdata.adapters.postgres.changes import Change, Delivered, Heard, Snapshot

AT = datetime(2024, 1, 2, tzinfo=UTC)


def change(xid: int, ticker: str) -> Change:
    return Change(xid, ticker, 5, AT, AT, 1)


def test_a_transaction_heard_statement_by_statement_delivers_each_ticker_once() -> None:
    seen = Delivered()
    assert seen.fresh(Heard(7, frozenset({"MA"}))) == Heard(7, frozenset({"MA"}))
    assert seen.fresh(Heard(7, frozenset({"MA", "MB"}))) == Heard(7, frozenset({"MB"}))
    assert seen.fresh(Heard(7, frozenset({"MB"}))) is None
    # the catch-up of a cut connection reads back what was not delivered, not the rest
    assert [seen.sent(change(7, t)) for t in ("MA", "MB", "MC")] == [True, True, False]
    assert not seen.sent(change(8, "MA"))
    # a notification too long to name its tickers: all of them but those sent, once
    assert seen.fresh(Heard(7, None)) == Heard(7, None, frozenset({"MA", "MB"}))
    assert seen.fresh(Heard(7, frozenset({"MD"}))) is None
    assert seen.sent(change(7, "MD"))


def test_what_a_snapshot_sees_is_forgotten() -> None:
    seen = Delivered()
    seen.fresh(Heard(7, frozenset({"MA"})))
    seen.fresh(Heard(12, frozenset({"MA"})))
    later = seen.past(Snapshot(10, 13, frozenset({12})))  # sees 7, not 12 (running)
    assert (later.sent(change(7, "MA")), later.sent(change(12, "MA"))) == (False, True)
