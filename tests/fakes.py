"""In-memory fakes of the domain's ports, shared by unit tests and DI overrides."""

from dishka import AnyOf, Provider, Scope

from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import CandleRepository, StoreHealth


class InMemoryCandleRepository:
    """CandleRepository and StoreHealth over a list; `available=False` simulates an outage."""

    def __init__(self, candles: list[Candle] | None = None) -> None:
        self.stored: list[Candle] = list(candles or [])
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory", "0", "switched off by the test")

    def _series(self, ticker: str, tf_min: int) -> list[Candle]:
        return sorted(
            (c for c in self.stored if c.ticker == ticker and c.tf_min == tf_min),
            key=lambda c: c.ts,
        )

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        self._check()
        tickers = sorted({c.ticker for c in self.stored})
        return [t for t in tickers if t.lower().startswith(prefix.lower())][:limit]

    async def candles(self, ticker: str, tf_min: int, limit: int, order: Order) -> list[Candle]:
        self._check()
        series = self._series(ticker, tf_min)
        return series[:limit] if order is Order.ASC else series[::-1][:limit]

    async def candle_range(
        self, ticker: str, tf_min: int, time_range: TimeRange, limit: int
    ) -> list[Candle]:
        self._check()
        series = self._series(ticker, tf_min)
        return [c for c in series if time_range.start <= c.ts <= time_range.end][:limit]

    async def ping(self) -> None:
        self._check()


def fake_store(repository: InMemoryCandleRepository) -> Provider:
    """A dishka provider overriding the PostgreSQL store with `repository`."""
    provider = Provider(scope=Scope.APP)
    provider.provide(lambda: repository, provides=AnyOf[CandleRepository, StoreHealth])
    return provider
