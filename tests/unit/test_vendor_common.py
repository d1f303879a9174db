"""The vendor protocols' shared rules: symbols and assets, offsets, resolutions, times."""

from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.candles import zone_info
from marketdata.entrypoints.settings import SettingsError, settings_from
from marketdata.entrypoints.vendors.common import (
    EPOCH,
    LATEST,
    Pair,
    at_ms,
    binance_symbol,
    ms_of,
    named_pairs,
    number_text,
    pair_of,
    resolution_minutes,
    resolution_of,
    zone_of_offset,
)


@pytest.mark.parametrize(
    ("ticker", "symbol"),
    [
        ("BTCUSDT", "BTCUSDT"),
        ("AMZN.US", "AMZN.US"),
        ("BRK-B", "BRK-B"),
        ("X_1", "X_1"),
        ("acme", None),  # lower case: Binance's symbols are not
        ("ES=F", None),
        ("A" * 21, None),
        ("", None),
    ],
)
def test_a_ticker_is_the_binance_symbol_of_its_own_name_or_none(
    ticker: str, symbol: str | None
) -> None:
    assert binance_symbol(ticker) == symbol


@pytest.mark.parametrize(
    ("ticker", "base", "quote"),
    [
        ("BTCUSDT", "BTC", "USDT"),
        ("ETHBTC", "ETH", "BTC"),
        ("BNBFDUSD", "BNB", "FDUSD"),  # the longest quote, not USD
        ("XTUSD", "X", "TUSD"),
        ("BTCUSD", "BTC", "USD"),
        ("USDT", "USDT", "USD"),  # nothing left for a base: the fallback
        ("AMZN.US", "AMZN.US", "USD"),
        ("SBER", "SBER", "RUB"),  # named
    ],
)
def test_assets_by_name_then_suffix_then_usd(ticker: str, base: str, quote: str) -> None:
    assert pair_of(ticker, {"SBER": Pair("SBER", "RUB")}) == Pair(base, quote)


def test_vendor_assets_is_read_and_checked() -> None:
    assert named_pairs(" SBER=SBER/RUB, GAZP = GAZP/RUB ,") == {
        "SBER": Pair("SBER", "RUB"),
        "GAZP": Pair("GAZP", "RUB"),
    }
    assert named_pairs("") == {}
    with pytest.raises(SettingsError, match="VENDOR_ASSETS"):
        settings_from({"VENDOR_ASSETS": "SBER=SBERRUB"})


@pytest.mark.parametrize(
    ("offset", "zone"),
    [
        ("0", "UTC"),
        ("+00:00", "UTC"),
        ("8", "Etc/GMT-8"),
        ("+08:00", "Etc/GMT-8"),
        ("-1:00", "Etc/GMT+1"),
        ("-12", "Etc/GMT+12"),
        ("+14:00", "Etc/GMT-14"),
        ("05:45", "<+0545>-05:45"),  # a fixed offset of its own, as PostgreSQL reads it
        ("-0:30", "<-0030>+00:30"),
        ("+14:30", None),
        ("05:60", None),
        ("+15", None),
        ("-13:00", None),
        ("Asia/Tokyo", None),
        ("", None),
    ],
)
def test_offsets_as_zones(offset: str, zone: str | None) -> None:
    assert zone_of_offset(offset) == zone


def test_a_fixed_offset_is_a_zone_python_reads_as_postgresql_does() -> None:
    kathmandu = zone_info("<+0545>-05:45")
    assert kathmandu.utcoffset(None) == timedelta(hours=5, minutes=45)
    assert zone_info("<-0330>+03:30").utcoffset(None) == -timedelta(hours=3, minutes=30)
    for wrong in ("<+0545>+05:45", "<+2400>-24:00"):
        with pytest.raises(ValueError, match="not a fixed offset"):
            zone_info(wrong)


@pytest.mark.parametrize(
    ("resolution", "minutes"),
    [
        ("1", 1),
        ("60", 60),
        ("240", 240),
        ("D", 1440),
        ("1D", 1440),
        ("3D", 4320),
        ("W", 10080),
        ("2W", 20160),
        ("1M", None),  # calendar months
        ("1S", None),
        ("0", None),
        ("5m", None),
        ("", None),
    ],
)
def test_resolutions_as_minutes(resolution: str, minutes: int | None) -> None:
    assert resolution_minutes(resolution) == minutes


def test_timeframes_as_resolutions() -> None:
    assert [resolution_of(tf) for tf in (1, 60, 720, 1440, 2880, 10080)] == [
        *("1", "60", "720", "1D", "2D", "1W")
    ]


def test_milliseconds_both_ways_exactly_and_clamped() -> None:
    at = datetime(2022, 8, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert ms_of(at) == 1659312000123
    assert at_ms(1659312000123) == at
    assert at_ms(-5) == EPOCH
    assert at_ms(10**30) == LATEST


def test_numbers_to_binance_s_eight_decimals_as_the_shortest_text() -> None:
    # a sum of floats carries the noise of its order (0.1 + 0.2): not past 8 decimals
    assert [number_text(x) for x in (23290.1, 100.0, 0.00001, 0.1 + 0.2, 652.8140000000001)] == [
        *("23290.1", "100.0", "0.00001", "0.3", "652.814")
    ]
    assert number_text(0.123456789) == "0.12345679"
