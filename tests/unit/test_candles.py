from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.candles import (
    TimeRange,
    limit_of,
    parse_timestamp,
    ticker_of,
    timeframe_of,
    zone_of,
)
from marketdata.domain.errors import InvalidParameter, InvalidQuery


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+00:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T06:04:05+03:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-01T22:04:05-05:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        # naive means UTC
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T03:04:05.250Z", datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
        # an offset whose "+" was not URL-encoded arrives as a space
        ("2024-01-02T06:04:05 03:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 06:04 0300", datetime(2024, 1, 2, 3, 4, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_iso_8601_and_returns_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text, "start")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "2024-01-02T25:00", "1e9"])
def test_parse_timestamp_rejects_garbage_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidQuery, match=r"^end: .* is not an ISO 8601 datetime"):
        parse_timestamp(text, "end")


def test_parse_timestamp_rejects_values_that_overflow_in_utc() -> None:
    with pytest.raises(InvalidQuery, match="out of the supported range"):
        parse_timestamp("0001-01-01T00:00:00+05:00", "start")


def test_time_range_is_inclusive_and_ordered() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert TimeRange(t, t).start == t
    with pytest.raises(InvalidQuery, match="must not be after end"):
        TimeRange(t + timedelta(seconds=1), t)


def test_time_range_demands_aware_datetimes() -> None:
    with pytest.raises(InvalidQuery):
        TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize("value", ["", "x" * 65, "AB\x00C", "A\x1fB", "A\x85B"])
def test_ticker_rejects_empty_long_and_control_characters(value: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        ticker_of(value)
    assert caught.value.name == "ticker"


def test_ticker_keeps_a_valid_value() -> None:
    assert ticker_of("BRK.B") == "BRK.B"


@pytest.mark.parametrize("value", [0, -5, 2**31])
def test_timeframe_must_be_positive_int4(value: int) -> None:
    with pytest.raises(InvalidParameter, match="tf_min"):
        timeframe_of(value)


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (5000, True), (5001, False)])
def test_limit_bounds(value: int, ok: bool) -> None:
    if ok:
        assert limit_of(value, 5000) == value
    else:
        with pytest.raises(InvalidParameter, match="between 1 and 5000"):
            limit_of(value, 5000)


@pytest.mark.parametrize("name", ["right/UTC", "right/America/New_York", "RIGHT/UTC"])
def test_zones_that_count_leap_seconds_are_refused(name: str) -> None:
    # PostgreSQL counts the leap seconds of the `right/` zones (27 s in 2024: every bar's
    # bucket moved), Python's zoneinfo does not: the two would disagree on every bucket
    with pytest.raises(InvalidParameter, match="leap seconds"):
        zone_of(name)


@pytest.mark.parametrize("name", ["UTC", "posix/Europe/London", "Asia/Kathmandu"])
def test_zones_both_sides_read_alike_are_kept(name: str) -> None:
    assert zone_of(name) == name
