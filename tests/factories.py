"""Test data: random but valid candles, and regular series of them."""

from datetime import UTC, datetime, timedelta

from polyfactory.factories.msgspec_factory import MsgspecFactory

from marketdata.domain.candles import Candle


class CandleFactory(MsgspecFactory[Candle]):
    __check_model__ = False

    ticker = "TEST"
    tf_min = 5
    ts_close = None  # set only when a caller asks for labels
    filled = False
    final = None
    revision = 0

    @classmethod
    def ts(cls) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
            minutes=5 * cls.__random__.randint(0, 100_000)
        )

    @classmethod
    def open(cls) -> float:
        return round(cls.__random__.uniform(10, 1000), 4)

    @classmethod
    def high(cls) -> float:
        return 2000.0

    @classmethod
    def low(cls) -> float:
        return 1.0

    @classmethod
    def close(cls) -> float:
        return round(cls.__random__.uniform(10, 1000), 4)

    @classmethod
    def volume(cls) -> float:
        return float(cls.__random__.randint(0, 1_000_000))

    @classmethod
    def openint(cls) -> int:
        return 0


def series(
    ticker: str,
    count: int,
    tf_min: int = 5,
    start: datetime = datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
) -> list[Candle]:
    """`count` consecutive candles with distinct, recognisable prices."""
    return [
        CandleFactory.build(
            ticker=ticker,
            tf_min=tf_min,
            ts=start + timedelta(minutes=tf_min * i),
            open=100.0 + i,
            high=101.5 + i,
            low=99.25 + i,
            close=100.5 + i,
            volume=1000.0 + i,
            openint=i,
        )
        for i in range(count)
    ]
