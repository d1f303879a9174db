"""Binance's kline streams in its own words: a stream's name (`btcusdt@kline_1m[@+08:00]`)
and the series it names, the kline event a bar becomes (alone or in a combined stream's
envelope), and the requests a connection sends (SUBSCRIBE, ...)."""

from typing import Any

import msgspec

from marketdata.domain.candles import Candle
from marketdata.entrypoints.vendors.common import (
    BINANCE_INTERVALS,
    BINANCE_SYMBOL,
    number_text,
    time_of,
    zone_of_offset,
)


class StreamName(msgspec.Struct, frozen=True):
    """A kline stream: its name as the client wrote it, and the series it names."""

    name: str
    ticker: str
    interval: str
    tf_min: int
    tz: str = "UTC"


def stream_of(name: str) -> StreamName | None:
    """`btcusdt@kline_1m` (Binance's lower-case symbol; the interval keeps its case), with
    an optional `@+08:00` for bars cut in that UTC offset; None for anything else."""
    symbol, _, rest = name.partition("@kline_")
    interval, _, offset = rest.partition("@")
    ticker = symbol.upper()
    if symbol != ticker.lower() or not BINANCE_SYMBOL.fullmatch(ticker):
        return None
    tf_min = BINANCE_INTERVALS.get(interval)
    tz = zone_of_offset(offset) if offset else "UTC"
    if tf_min is None or tz is None:
        return None
    return StreamName(name, ticker, interval, tf_min, tz)


class Kline(msgspec.Struct, kw_only=True):
    """A kline in Binance's field order; what we do not store (trade ids, trades, quote and
    taker volumes) is -1, 0 or "0"."""

    t: int  # open time, ms
    T: int  # close time: the open + the interval - 1 ms
    s: str
    i: str
    f: int = -1
    L: int = -1
    o: str
    c: str
    h: str
    low: str = msgspec.field(name="l")
    v: str
    n: int = 0
    x: bool  # whether the bar is final
    q: str = "0"
    V: str = "0"
    Q: str = "0"
    B: str = "0"


class KlineEvent(msgspec.Struct, kw_only=True):
    e: str = "kline"
    E: int  # event time: the present
    s: str
    k: Kline


class Combined(msgspec.Struct):
    stream: str
    data: KlineEvent


class Request(msgspec.Struct):
    method: str
    params: list[Any] = []
    id: int | str | None = None


encode = msgspec.json.Encoder().encode
decode_request = msgspec.json.Decoder(Request).decode


def kline_event(stream: StreamName, candle: Candle, event: int, micro: bool) -> KlineEvent:
    """A bar as Binance's kline event: `x` its `final` (a stored candle is final as
    written); prices and volume as strings, as Binance sends them; times (`event` the
    event's) in ms, or µs with `micro`."""
    opens = time_of(candle.ts, micro)
    kline = Kline(
        t=opens,
        T=opens + stream.tf_min * 60_000 * (1000 if micro else 1) - 1,
        s=stream.ticker,
        i=stream.interval,
        o=number_text(candle.open),
        c=number_text(candle.close),
        h=number_text(candle.high),
        low=number_text(candle.low),
        v=number_text(candle.volume),
        x=candle.final is not False,
    )
    return KlineEvent(E=event, s=stream.ticker, k=kline)
