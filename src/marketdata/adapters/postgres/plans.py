"""A domain Plan read through bars.py: its statement and values (`plan_sql`, for pages,
exports and the JSON PostgreSQL writes), and a row of it as a Candle (`bar_of`)."""

import functools
from typing import Any

from marketdata.adapters.postgres.bars import Shape, bars_params, bars_sql, shape_of
from marketdata.domain.bar_options import BarOptions, Fill, bar_close
from marketdata.domain.candles import Candle
from marketdata.domain.ports import Plan


def bar_of(ticker: str, tf_min: int, row: tuple[Any, ...], options: BarOptions) -> Candle:
    """A row of `bars_sql` as a Candle: `ts_close` when a label was asked for (`ts` is
    always the open here; the domain relabels)."""
    ts, o, h, low, c, v, oi, closes, filled = row[:9]
    return Candle(
        ticker,
        tf_min,
        ts,
        o,
        h,
        low,
        c,
        v,
        oi,
        ts_close=closes if options.label is not None else None,
        filled=filled,
    )


def plan_sql(plan: Plan, extra: int = 0) -> tuple[bytes, dict[str, Any]]:
    """A plan's bars: its statement (`bars_sql` of its shape) and values, at most its limit
    and `extra` more (None: all); after its cursor, only bars closing after it."""
    resampled = plan.resample is not None
    after = plan.after
    # A resampled page after a cursor reads the range asked for and keeps the bars closing
    # after the cursor's bar: a bucket of local time may hold rows from before its open (a
    # local hour that comes twice), which the range left after the cursor would cut off.
    keyset = resampled and after is not None and plan.requested is not None
    window = plan.requested if keyset else plan.time_range
    shape = shape_of(
        plan.tf_min,
        plan.resample,
        plan.options,
        plan.order,
        window is not None,
        keyset=keyset,
        as_of=plan.as_of is not None,
    )
    params = bars_params(
        plan.ticker,
        plan.tf_min,
        plan.resample,
        plan.options,
        limit=plan.limit + extra if plan.limit is not None else None,
        time_range=window,
        after_close=bar_close(after, plan.tf_min, plan.options, resampled) if after else None,
    )
    params["as_of"] = plan.as_of
    if shape.fill is not Fill.NONE:
        return bars_sql(shape), params
    return _limited_sql(shape, params["limit"], params["rows"]), params


@functools.lru_cache(maxsize=256)
def _limited_sql(shape: Shape, limit: int | None, rows: int | None) -> bytes:
    """bars_sql with its row limits written in. With the limit a parameter, PostgreSQL
    planned the prepared statement again at every request (a generic plan reckons on a
    tenth of the series for an unknown LIMIT, so a plan for the values always looked
    cheaper): binding took 0.31 ms, 0.08 ms now, of a page of 200 that costs 0.5 ms to run
    (bench/README.md). Statements of filled bars join their buckets to the bars: they keep
    being planned for their own values."""

    def literal(value: int | None) -> bytes:
        return b"NULL" if value is None else str(int(value)).encode()

    return bars_sql(shape).replace(b"%(limit)s", literal(limit)).replace(b"%(rows)s", literal(rows))
