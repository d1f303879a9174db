"""What the vendor protocols share: the present they answer as of, how our tickers read as
a vendor's symbols and pairs of assets, the timeframes each vendor names, and the reads
every vendor makes, all through `CandleQueries` (the read plan of our own API).

The vendors' modules translate; nothing here knows a wire format."""

import contextlib
import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import Candle, Order, fixed_zone
from marketdata.domain.errors import InvalidParameter, NotFound
from marketdata.domain.queries import CandleQueries, CandleQuery
from marketdata.domain.timeframes import Series, serving

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)


# A vendor's routes: answered gzip where the client takes it, as the vendors' servers
# answer, never brotli (app.py's compression): a vendor's client may ask for br it cannot
# read (binance-sdk-spot sends `Accept-Encoding: gzip, deflate, br` and has no decoder).
VENDOR_ROUTES = {"gzip_only": True}


# -- the present -------------------------------------------------------------------------


@runtime_checkable
class Present(Protocol):
    """The present a vendor protocol answers as of ("now"): its time endpoints say it, and
    no bar opening after it is served, by REST or by a stream. The wall clock by default
    (`wall_clock`); the composition root may provide another (a session's simulated
    present), and every vendor handler then answers as of that."""

    def __call__(self) -> datetime:
        """The present, timezone-aware UTC."""
        ...


def wall_clock() -> datetime:
    return datetime.now(UTC)


def ms_of(at: datetime) -> int:
    """An instant as milliseconds since the epoch (Binance's and Polygon's times)."""
    return (at - EPOCH) // _MS


def time_of(at: datetime, micro: bool) -> int:
    """An instant as Binance writes it: ms since the epoch, or µs (its `MICROSECOND` unit)."""
    return (at - EPOCH) // _US if micro else ms_of(at)


def at_time(value: int) -> datetime:
    """A time Binance is given, in ms or µs ("can be passed in milliseconds or microseconds":
    from 10**14 on, µs, an instant of 1973 or later, where ms would be past the year 5000),
    clamped to what a datetime holds."""
    if value < 10**14:
        return at_ms(value)
    return EPOCH + _US * value if value < (LATEST - EPOCH) // _US else LATEST


def at_ms(ms: int) -> datetime:
    """Milliseconds since the epoch as an instant, clamped to what a datetime holds."""
    if ms <= 0:
        return EPOCH
    return EPOCH + _MS * ms if ms < ms_of(LATEST) else LATEST


def number_text(value: float) -> str:
    """A number as Binance's string field ("23290.1"): to its 8 decimals (the precision its
    symbols declare in exchangeInfo), then the shortest text that reads back as that float. A sum
    of floats (a resampled bar's volume) otherwise carried the noise of the order it was
    added in: "652.8140000000001" for a bar one query, "652.814" another."""
    return _encode(round(value, 8)).decode()


_encode = msgspec.json.Encoder().encode


# -- symbols and assets ------------------------------------------------------------------

# What Binance accepts as a symbol (its error -1100 quotes this pattern).
BINANCE_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")


def binance_symbol(ticker: str) -> str | None:
    """Our ticker as a Binance symbol: the ticker itself, when it is a valid one (capital
    letters, digits, `-`, `_`, `.`; at most 20), so the rule reverses trivially (a symbol
    is the ticker it names); None for a ticker that is not, which Binance does not offer."""
    return ticker if BINANCE_SYMBOL.fullmatch(ticker) else None


class Pair(msgspec.Struct, frozen=True):
    """A ticker read as a pair of assets: what is priced, and in what."""

    base: str
    quote: str


# Quote assets recognised at the end of a ticker (BTCUSDT: BTC priced in USDT), longest
# first; FALLBACK_QUOTE prices a ticker that ends in none (AMZN.US: AMZN.US in USD).
QUOTE_ASSETS = (
    *("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI"),
    *("BTC", "ETH", "BNB", "EUR", "GBP", "TRY", "BRL", "JPY", "USD"),
)
CRYPTO_QUOTES = frozenset(QUOTE_ASSETS[:10])
FALLBACK_QUOTE = "USD"


def pair_of(ticker: str, named: Mapping[str, Pair]) -> Pair:
    """A ticker's assets: as VENDOR_ASSETS names them; else the longest common quote asset it
    ends with, the rest being the base (BTCUSDT: BTC/USDT); else the ticker in USD."""
    if (pair := named.get(ticker)) is not None:
        return pair
    for quote in QUOTE_ASSETS:
        if ticker.endswith(quote) and len(ticker) > len(quote):
            return Pair(ticker[: -len(quote)], quote)
    return Pair(ticker, FALLBACK_QUOTE)


@functools.lru_cache(maxsize=8)
def named_pairs(setting: str) -> dict[str, Pair]:
    """VENDOR_ASSETS read: comma-separated `TICKER=BASE/QUOTE`; raises ValueError naming a
    malformed item."""
    pairs: dict[str, Pair] = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        ticker, equals, assets = item.partition("=")
        base, slash, quote = assets.partition("/")
        if not (equals and slash and ticker.strip() and base.strip() and quote.strip()):
            raise ValueError(f"{item!r} is not TICKER=BASE/QUOTE")
        pairs[ticker.strip()] = Pair(base.strip(), quote.strip())
    return pairs


# -- timeframes --------------------------------------------------------------------------

# Binance's intervals as timeframes in minutes. `1s` (below a minute) and `1M` (calendar
# months, which no bucket of fixed minutes makes) are Binance's too, and not served.
BINANCE_INTERVALS: dict[str, int] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
    "3d": 4320,
    "1w": 10080,
}
NOT_SERVED_INTERVALS = ("1s", "1M")

_DAY, _WEEK = 1440, 10080
_RESOLUTION = re.compile(r"(\d{1,7})|(\d{0,4})([DW])")


def resolution_minutes(resolution: str) -> int | None:
    """A TradingView resolution as minutes: `5` (minutes), `1D` or `D`, `2W` or `W`; None
    for seconds (`1S`), months (`1M`: calendar months are not a bucket of fixed minutes)
    and anything else."""
    match = _RESOLUTION.fullmatch(resolution.strip().upper())
    if match is None:
        return None
    if match[1] is not None:
        minutes = int(match[1])
    else:
        minutes = int(match[2] or 1) * (_DAY if match[3] == "D" else _WEEK)
    return minutes if 0 < minutes <= 2**31 - 1 else None


def resolution_of(tf_min: int) -> str:
    """A timeframe as TradingView names it: weeks `1W`, days `1D`, else minutes."""
    if tf_min % _WEEK == 0:
        return f"{tf_min // _WEEK}W"
    if tf_min % _DAY == 0:
        return f"{tf_min // _DAY}D"
    return str(tf_min)


_OFFSET = re.compile(r"([+-]?)(\d{1,2})(?::(\d{2}))?")


def zone_of_offset(offset: str) -> str | None:
    """A UTC offset as Binance writes it (`8`, `+08:00`, `-1:00`, `05:45`, `0`), from -12:00 to
    +14:00, as a zone our bars are cut in: whole hours are the fixed zones `Etc/GMT-8` (sic:
    POSIX signs are inverted) and `UTC`, others a fixed offset of their own (`fixed_zone`);
    None for anything else."""
    match = _OFFSET.fullmatch(offset.strip())
    if match is None or int(match[3] or 0) > 59:
        return None
    minutes = (int(match[2]) * 60 + int(match[3] or 0)) * (-1 if match[1] == "-" else 1)
    if not -12 * 60 <= minutes <= 14 * 60:
        return None
    if minutes % 60:
        return fixed_zone(minutes)
    return "UTC" if minutes == 0 else f"Etc/GMT{-minutes // 60:+d}"


# -- reads -------------------------------------------------------------------------------


class UnknownSymbol(Exception):
    """No series of this ticker is stored."""


class NotServed(Exception):
    """The ticker's stored timeframes cannot make this one (not stored, none divides it)."""


class Plan(msgspec.Struct, frozen=True):
    """One series as a vendor asks for it: `ticker`'s bars of `tf_min` cut as `options`
    say, made of its stored `source_tf`, whose candles open from `first` to `last`."""

    ticker: str
    tf_min: int
    options: BarOptions
    source_tf: int
    first: datetime
    last: datetime

    def last_candle_of(self, opening: datetime) -> datetime:
        """The open of the last source candle of the bar opening at `opening`: the end a
        range must reach for our whole-bucket rule to keep that bar."""
        return opening + timedelta(minutes=self.tf_min - self.source_tf)


class VendorReads:
    """The reads of every vendor protocol, as of `present`: bars opening in a window, the
    first or the last `limit` of them. Bars are those of `/candles` (stored, or resampled
    by the domain from the finest stored timeframe that divides them), each whole as it
    stands: the bar that is forming now is served with the candles it has so far."""

    def __init__(
        self,
        queries: CandleQueries,
        present: Present,
        max_limit: int,
    ) -> None:
        self._queries = queries
        self._present = present
        self.max_limit = max_limit

    def present(self) -> datetime:
        return self._present()

    async def plan(self, ticker: str, tf_min: int, options: BarOptions = PLAIN) -> Plan:
        """How `tf_min` of `ticker` is served (`serving`, the rule of every reader);
        UnknownSymbol or NotServed when it is not."""
        try:
            stored, _, _ = await self._queries.coverage(ticker)
        except (NotFound, InvalidParameter):
            raise UnknownSymbol(ticker) from None
        series = [Series(ticker, c.tf_min, c.first, c.last, c.count) for c in stored]
        served = serving(tf_min, series, options)
        if not served.available:
            raise NotServed(f"{ticker} is not served at {tf_min} minutes")
        source = served.resample.source_tf if served.resample is not None else tf_min
        held = next(c for c in stored if c.tf_min == source)
        return Plan(ticker, tf_min, options, source, held.first, held.last)

    async def first(self, plan: Plan, start: datetime, end: datetime, limit: int) -> list[Candle]:
        """The first `limit` bars opening in [start, end] (end at most the present),
        ascending."""
        end = min(end, self.present())
        if start > end:
            return []
        with contextlib.suppress(NotFound):
            page = await self._queries.candle_range(
                plan.ticker,
                start,
                plan.last_candle_of(end),
                plan.tf_min,
                min(limit, self.max_limit),
                plan.options,
            )
            return page.candles
        return []

    async def last(
        self, plan: Plan, end: datetime, limit: int, start: datetime | None = None
    ) -> list[Candle]:
        """The last `limit` bars opening in [start, end] (end at most the present),
        ascending."""
        end = min(end, self.present())
        limit = min(limit, self.max_limit)
        if start is not None and start > end:
            return []
        if end >= plan.last:  # every bar opens by then: the newest (one indexed read)
            try:
                newest = await self._queries.candles(
                    plan.ticker, plan.tf_min, limit, Order.DESC, plan.options
                )
            except NotFound:
                return []
            return [c for c in reversed(newest) if start is None or c.ts >= start]
        query = CandleQuery(
            ticker=plan.ticker,
            tf_min=plan.tf_min,
            limit=limit,
            order=Order.DESC,
            start=start or EPOCH,
            end=plan.last_candle_of(end),
            options=plan.options,
            export=True,
        )
        try:
            bars = await self._queries.export(await self._queries.plan(query))
        except NotFound:
            return []
        async with contextlib.aclosing(bars):
            found = [bar async for bar in bars]
        found.reverse()
        return found

    async def before(self, plan: Plan, end: datetime) -> Candle | None:
        """The last bar opening before `end`, if any."""
        found = await self.last(plan, end - _US, 1)
        return found[-1] if found else None
