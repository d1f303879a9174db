"""How a timeframe is served: stored, resampled from which source, read from which rollup."""

from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.bar_options import (
    BarOptions,
    Fill,
    Label,
    bar_close,
    bar_options,
    local_to_utc,
    session_of,
)
from marketdata.domain.errors import InvalidParameter
from marketdata.domain.timeframes import (
    COMMON_TF_MINS,
    Resample,
    Rollup,
    Series,
    Served,
    aligned,
    rollup_of,
    servable,
    serving,
)

DEFAULT_ROLLUPS = (Rollup(15), Rollup(60), Rollup(1440))
JAN = datetime(2024, 1, 1, tzinfo=UTC)
DEC = datetime(2025, 12, 31, tzinfo=UTC)


def held(*tfs: int, first: datetime = JAN, last: datetime = DEC) -> list[Series]:
    return [Series("X", tf, first, last, 100) for tf in tfs]


@pytest.mark.parametrize(
    ("tf_min", "tz", "rollup"),
    [
        (60, "UTC", 60),  # the rollup's rows are the buckets
        (1440, "UTC", 1440),
        (10080, "UTC", 1440),  # weeks from Monday 1970-01-05: whole days
        (120, "UTC", 60),
        (45, "UTC", 15),
        (1440, "America/New_York", 60),  # -05:00 / -04:00: hours, not days
        (1440, "Asia/Kolkata", 15),  # +05:30
        (1440, "Asia/Kathmandu", 15),  # +05:45
        (60, "Asia/Kolkata", 15),
        (10, "UTC", None),  # no rollup divides it
    ],
)
def test_the_coarsest_aligned_rollup_serves(tf_min: int, tz: str, rollup: int | None) -> None:
    plan = serving(tf_min, held(1), BarOptions(tz), DEFAULT_ROLLUPS)
    assert plan.resample == Resample(1, rollup)


def test_a_zone_s_own_days_serve_its_days_and_weeks() -> None:
    kept = (*DEFAULT_ROLLUPS, Rollup(1440, "America/New_York"))
    ny = "America/New_York"
    assert serving(1440, held(1), BarOptions(ny), kept).resample == Resample(1, 1440, ny)
    assert serving(10080, held(1), BarOptions(ny), kept).resample == Resample(1, 1440, ny)
    # not another zone's days, nor UTC's
    assert serving(1440, held(1), BarOptions("Europe/London"), kept).resample == Resample(1, 60)
    assert serving(1440, held(1), BarOptions(), kept).resample == Resample(1, 1440)


def test_rollups_are_read_from_the_setting_s_words() -> None:
    assert rollup_of("15") == Rollup(15)
    assert rollup_of("1440@Asia/Kolkata") == Rollup(1440, "Asia/Kolkata")
    assert str(rollup_of(" 10080@America/New_York")) == "10080@America/New_York"
    for bad in ("1", "x", "60@America/New_York", "1440@Nowhere/City", ""):
        with pytest.raises(InvalidParameter):
            rollup_of(bad)


def test_stored_timeframes_are_served_as_stored_and_never_from_rollups() -> None:
    assert serving(60, held(1, 60), BarOptions(), DEFAULT_ROLLUPS).resample is None
    # a stored hourly series has no hourly rollup: daily buckets come from the 15-minute one
    ny = BarOptions("America/New_York")
    assert serving(1440, held(1, 60), ny, DEFAULT_ROLLUPS).resample == Resample(1, 15)


def test_a_rollup_must_be_made_of_the_same_stored_timeframe() -> None:
    # 60 is made of 2 (the finest divisor of 60), 15 of 3: 15 cannot serve 60
    fifteen = Rollup(15)
    assert serving(60, held(2, 3), BarOptions(), [fifteen]).resample == Resample(2)
    assert serving(30, held(2, 3), BarOptions(), [fifteen]).resample == Resample(2)
    assert serving(45, held(3, 5), BarOptions(), [fifteen]).resample == Resample(3, 15)


def test_no_rollups_kept_means_today_s_rule() -> None:
    assert serving(1440, held(1, 5)).resample == Resample(1)
    assert not serving(7, held(5), BarOptions(), DEFAULT_ROLLUPS).available


def test_servable_lists_stored_and_common_timeframes_as_serving_serves_them() -> None:
    # 5 and 60 stored (and an odd 7): rollups of 15 and 1440 kept, of 60 too but 60 is stored
    served = servable(held(5, 7, 60), DEFAULT_ROLLUPS)
    assert served == [
        Served(5, "stored", 5),
        Served(7, "stored", 7),
        Served(10, "resampled", 5),
        Served(15, "rollup", 5),
        Served(30, "rollup", 5),  # two 15-minute rows a bar
        Served(60, "stored", 60),
        Served(120, "rollup", 5),  # the finest divisor is 5: the 15-minute rollup, not 60
        Served(240, "rollup", 5),
        Served(360, "rollup", 5),
        Served(720, "rollup", 5),
        Served(1440, "rollup", 5),
        Served(10080, "rollup", 5),
    ]
    # the same rule as `serving`, for every timeframe listed, and nothing it cannot serve
    for s in served:
        plan = serving(s.tf_min, held(5, 7, 60), BarOptions(), DEFAULT_ROLLUPS)
        assert plan.available
        assert (plan.resample.source_tf if plan.resample else s.tf_min) == s.from_tf_min
    offered = {s.tf_min for s in served}
    assert all(not serving(tf, held(5, 7, 60)).available for tf in set(COMMON_TF_MINS) - offered)


def test_servable_without_rollups_resamples_and_takes_other_candidates() -> None:
    assert servable(held(1440)) == [Served(1440, "stored", 1440), Served(10080, "resampled", 1440)]
    assert servable(held(3), candidates=[2, 6, 9]) == [
        Served(3, "stored", 3),
        Served(6, "resampled", 3),
        Served(9, "resampled", 3),
    ]
    assert servable([], DEFAULT_ROLLUPS) == []


def test_alignment_follows_the_zone_over_the_series_span_only() -> None:
    # Kolkata used +05:53:28 (local mean time) until 1854 and +06:30 in 1942-1945
    modern = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    assert aligned(15, "Asia/Kolkata", *modern)
    assert not aligned(60, "Asia/Kolkata", *modern)
    old = (datetime(1850, 1, 1, tzinfo=UTC), datetime(1851, 1, 1, tzinfo=UTC))
    assert not aligned(15, "Asia/Kolkata", *old)
    # New York changes offset at 02:00 local, on a UTC hour
    assert aligned(60, "America/New_York", *modern)
    assert not aligned(1440, "America/New_York", *modern)
    # weeks count from Monday 1970-01-05: whole days fit them, 7-minute buckets do not
    weeks = serving(10080, held(1), BarOptions(), [Rollup(1440), Rollup(7)])
    assert weeks.resample == Resample(1, 1440)
    assert serving(10080, held(1), BarOptions(), [Rollup(7)]).resample == Resample(1)
    # a rollup of weeks counts from the same Monday: it serves weeks and two-week bars
    kept = [Rollup(1440), Rollup(10080), Rollup(10080, "America/St_Johns")]
    assert serving(10080, held(1), BarOptions(), kept).resample == Resample(1, 10080)
    assert serving(20160, held(1), BarOptions(), kept).resample == Resample(1, 10080)
    johns = BarOptions("America/St_Johns")
    assert serving(10080, held(1), johns, kept).resample == Resample(1, 10080, "America/St_Johns")


def test_day_start_and_session_take_only_rollups_whose_buckets_fit() -> None:
    ny, kept = "America/New_York", (*DEFAULT_ROLLUPS, Rollup(1440, "America/New_York"))
    # the FX day from 17:00 New York: hours fit, New York's midnight days do not
    fx = BarOptions(ny, day_start=17 * 60)
    assert serving(1440, held(1), fx, kept).resample == Resample(1, 60)
    # an equity's session 09:30-16:00: its edges are on quarter hours, not whole hours
    equity = BarOptions(ny, session=session_of("09:30-16:00"))
    assert serving(1440, held(1), equity, kept).resample == Resample(1, 15)
    # India's 09:15 open with Kolkata's +05:30: quarter hours still fit
    nse = BarOptions("Asia/Kolkata", day_start=9 * 60 + 15)
    assert serving(1440, held(1), nse, kept).resample == Resample(1, 15)


def test_bar_options_are_read_by_their_value_objects() -> None:
    options = bar_options("America/New_York", "17:00", "18:00-17:00", "prev", "close")
    assert (options.day_start, str(options.session)) == (17 * 60, "18:00-17:00")
    assert (options.fill, options.label) == (Fill.PREV, Label.CLOSE)
    assert options.origin(1440) == datetime(1970, 1, 1, 17, 0)
    for bad in (
        {"day_start": "25:00"},
        {"day_start": "9am"},
        {"session": "09:30"},
        {"session": "10:00-10:00"},
        {"tz": "Mars/Olympus"},
        {"fill": "zero"},
        {"label": "middle"},
    ):
        with pytest.raises(InvalidParameter, match=next(iter(bad))):
            bar_options(**bad)


def test_local_times_that_happen_twice_or_not_at_all() -> None:
    ny = "America/New_York"
    # clocks go forward at 02:00 to 03:00: 02:30 does not happen; it starts when the gap
    # ends (03:00 EDT), where PostgreSQL would keep the offset before (07:30Z, 03:30 EDT)
    assert local_to_utc(datetime(2024, 3, 10, 2, 30), ny) == datetime(2024, 3, 10, 7, tzinfo=UTC)
    # Chatham goes from +12:45 to +13:45 at 02:45: its 03:00 starts at 14:00Z
    chatham = datetime(2024, 9, 29, 3)
    assert local_to_utc(chatham, "Pacific/Chatham") == datetime(2024, 9, 28, 14, tzinfo=UTC)
    # clocks go back at 02:00: 01:30 happens twice, the later one (EST) is taken
    assert local_to_utc(datetime(2024, 11, 3, 1, 30), ny) == datetime(
        2024, 11, 3, 6, 30, tzinfo=UTC
    )
    # the day of 2024-03-10 has 23 hours, 2024-11-03 25
    days = BarOptions(tz=ny)
    spring = datetime(2024, 3, 10, 5, tzinfo=UTC)
    assert bar_close(spring, 1440, days, resampled=True) - spring == timedelta(hours=23)
    autumn = datetime(2024, 11, 3, 4, tzinfo=UTC)
    assert bar_close(autumn, 1440, days, resampled=True) - autumn == timedelta(hours=25)
    # Santiago's 2024-09-08 starts at 01:00 (04:00Z, clocks went forward at midnight) and
    # closes at the next midnight (03:00Z), not 24 hours after 01:00
    santiago = datetime(2024, 9, 8, 4, tzinfo=UTC)
    closes = bar_close(santiago, 1440, BarOptions(tz="America/Santiago"), resampled=True)
    assert closes == datetime(2024, 9, 9, 3, tzinfo=UTC)
