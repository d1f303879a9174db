"""What the domain needs from the outside world, as Protocols the adapters implement."""

from collections.abc import Iterable
from typing import Protocol

from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ingest import Row, WriteResult


class CandleRepository(Protocol):
    """Read side of the candle store. Raises StoreUnavailable when the store cannot answer."""

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        """Distinct tickers starting with `prefix` (case-insensitive, literal), sorted."""
        ...

    async def candles(self, ticker: str, tf_min: int, limit: int, order: Order) -> list[Candle]:
        """The oldest `limit` candles ascending (ASC) or the newest descending (DESC)."""
        ...

    async def candle_range(
        self, ticker: str, tf_min: int, time_range: TimeRange, limit: int
    ) -> list[Candle]:
        """Candles with start <= ts <= end, ascending, at most `limit`."""
        ...


class CandleWriter(Protocol):
    async def write(self, rows: Iterable[Row]) -> WriteResult:
        """Upsert every row, all or nothing: an error from `rows` (a BadRow) or from the
        store leaves the table as it was. Rows equal to what is stored change nothing."""
        ...


class StoreHealth(Protocol):
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        ...
