"""Helpers of the Alpaca and Polygon tests: sessions of candles, a fixed present, and our
own API's answer to compare the vendors' with."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from dishka import Provider, Scope, provide

from marketdata.domain.candles import Candle
from marketdata.entrypoints.vendors.common import Present
from tests.support import Client

FIRST_OPEN = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)  # 09:30 in New York
SESSION_MINUTES = 390


def sessions(ticker: str, days: int = 2, tf_min: int = 5, base: float = 100.0) -> list[Candle]:
    """Regular US sessions of `tf_min` candles from 2024-01-02 (weekdays in a row), each
    with its own prices and volume."""
    candles = []
    for day in range(days):
        opens = FIRST_OPEN + timedelta(days=day)
        for i in range(SESSION_MINUTES // tf_min):
            price = base + day * 10 + i / 100
            candles.append(
                Candle(
                    ticker,
                    tf_min,
                    opens + timedelta(minutes=i * tf_min),
                    price,
                    price + 0.5,
                    price - 0.5,
                    price + 0.25,
                    float(1000 + day * 100 + i),
                    0,
                )
            )
    return candles


def minute_bar(ticker: str, at: datetime, price: float = 10.0) -> Candle:
    return Candle(ticker, 1, at, price, price + 1, price - 1, price + 0.5, 100.0, 0)


def rewrite(url: str, candle: Candle) -> None:
    """A stored candle written again with other values, as any writer may."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE candles SET open = %s, high = %s, low = %s, close = %s, volume = %s"
            " WHERE ticker = %s AND tf_min = %s AND ts = %s",
            (
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.volume,
                candle.ticker,
                candle.tf_min,
                candle.ts,
            ),
        )


def fixed_present(at: datetime) -> Provider:
    """The vendor protocols' present, fixed at `at`."""

    class FixedPresent(Provider):
        scope = Scope.APP

        @provide
        def present(self) -> Present:
            now: Callable[[], datetime] = lambda: at  # noqa: E731
            return now

    return FixedPresent()


def ours(client: Client, ticker: str, start: str, end: str, **params: Any) -> list[dict[str, Any]]:
    """Every candle of our own `/candles/range` for the same question, all pages."""
    query: dict[str, Any] = {"ticker": ticker, "start": start, "end": end, **params}
    found: list[dict[str, Any]] = []
    while True:
        body = client.get("/candles/range", params=query).json()
        found += body["data"]
        if "next" not in body:
            return found
        query["cursor"] = body["next"]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
