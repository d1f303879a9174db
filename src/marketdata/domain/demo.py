"""A deterministic demo dataset, so that a new user sees data with the first command.

Four fictional tickers, 5-minute bars over a US session (14:30-21:00 UTC) on weekdays for
about three months, and daily bars made from them. Same seed, same candles, every time.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from marketdata.domain.ingest import Row

TICKERS = {"ACME": 120.0, "GLOBEX": 48.0, "INITECH": 310.0, "UMBRELLA": 75.0}
FIRST_DAY = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
DAYS = 91
BARS_PER_DAY = 78  # 6.5 hours of 5-minute bars


def demo_rows() -> Iterator[Row]:
    rng = random.Random(20250106)  # noqa: S311 (a fixed seed for fixed data, not secrets)
    for ticker, price in TICKERS.items():
        for day in range(DAYS):
            midnight = FIRST_DAY + timedelta(days=day)
            if midnight.weekday() >= 5:
                continue
            session = midnight + timedelta(hours=14, minutes=30)
            bars = []
            for i in range(BARS_PER_DAY):
                open_ = price
                close = round(max(0.5, open_ * (1 + rng.gauss(0, 0.002))), 2)
                high = round(max(open_, close) * (1 + abs(rng.gauss(0, 0.0008))), 2)
                low = round(min(open_, close) * (1 - abs(rng.gauss(0, 0.0008))), 2)
                volume = float(int(rng.lognormvariate(9, 0.6)))
                bars.append(
                    (
                        ticker,
                        5,
                        session + timedelta(minutes=5 * i),
                        open_,
                        high,
                        low,
                        close,
                        volume,
                        0,
                    )
                )
                price = close
            yield from bars
            yield (
                ticker,
                1440,
                midnight,
                bars[0][3],
                max(b[4] for b in bars),
                min(b[5] for b in bars),
                bars[-1][6],
                sum(b[7] for b in bars),
                0,
            )
