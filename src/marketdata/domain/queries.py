"""The read use cases: validation and defaults of the REST contract over a CandleRepository."""

from datetime import datetime

import msgspec

from marketdata.domain.candles import (
    MAX_TICKER_LENGTH,
    Candle,
    Order,
    TimeRange,
    limit_of,
    ticker_of,
    timeframe_of,
)
from marketdata.domain.errors import InvalidParameter, NotFound
from marketdata.domain.ports import CandleRepository

DEFAULT_SYMBOLS_LIMIT = 100
DEFAULT_CANDLES_LIMIT = 200


class QueryLimits(msgspec.Struct, frozen=True):
    """The configured bounds: DEFAULT_TF_MIN and MAX_LIMIT."""

    default_tf_min: int = 5
    max_limit: int = 5000


class CandleQueries:
    def __init__(self, repository: CandleRepository, limits: QueryLimits) -> None:
        self._repository = repository
        self._limits = limits

    async def symbols(self, prefix: str = "", limit: int | None = None) -> list[str]:
        if len(prefix) > MAX_TICKER_LENGTH:
            raise InvalidParameter("prefix", f"must be at most {MAX_TICKER_LENGTH} characters")
        if not prefix.isprintable():
            raise InvalidParameter("prefix", "must not contain control characters")
        limit = limit_of(DEFAULT_SYMBOLS_LIMIT if limit is None else limit, self._limits.max_limit)
        return await self._repository.symbols(prefix, limit)

    async def candles(
        self,
        ticker: str,
        tf_min: int | None = None,
        limit: int | None = None,
        order: Order = Order.ASC,
    ) -> list[Candle]:
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        limit = limit_of(DEFAULT_CANDLES_LIMIT if limit is None else limit, self._limits.max_limit)
        found = await self._repository.candles(ticker, tf_min, limit, order)
        if not found:
            raise NotFound(f"No candles found for ticker {ticker!r} with tf_min={tf_min}")
        return found

    async def candle_range(
        self,
        ticker: str,
        start: datetime,
        end: datetime,
        tf_min: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        limit = limit_of(self._limits.max_limit if limit is None else limit, self._limits.max_limit)
        time_range = TimeRange(start, end)
        found = await self._repository.candle_range(ticker, tf_min, time_range, limit)
        if not found:
            raise NotFound(
                f"No candles found for ticker {ticker!r} with tf_min={tf_min} between "
                f"{time_range.start.isoformat()} and {time_range.end.isoformat()}"
            )
        return found
