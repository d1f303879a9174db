"""Bars made from stored candles, in SQL: resampled into buckets (from the candles or a
rollup), kept to a session, missing buckets filled, close times computed. The one statement
builder for pages, exports, replays and live bars, so that all of them agree (bars as they
form, a row per source candle, are `forming.py`'s, made of the same pieces); the stored
candles' own SELECT (`plain_sql`) is here too.

A statement returns, in the order asked: bucket (the bar's open), open, high, low, close,
volume, openint, its close time, and whether it was filled. Resampled buckets follow the
rules of `buckets.py`; a run of source rows cut short by its row limit ends inside its last
bucket, which is left out; in a range, only buckets whole inside it are kept.
"""

import functools
from datetime import datetime, time, timedelta
from typing import Any

import msgspec

from marketdata.adapters.postgres.buckets import (
    CANDLE_ROWS,
    COLUMNS,
    ROLLUP_ROWS,
    bucketed,
    instant,
    label,
    start,
)
from marketdata.domain.bar_options import BarOptions, Fill, Session
from marketdata.domain.candles import Order, TimeRange
from marketdata.domain.timeframes import Resample

# Where the rows of a resampling are read: the candles of the stored timeframe, or a rollup
# kept from them (adapters/postgres/rollups.py).
CANDLES, ROLLUPS = "candles", "candle_rollups"
MINUTES_PER_DAY = 1440


class Shape(msgspec.Struct, frozen=True):
    """What decides a statement's text (its values are parameters)."""

    resample: bool
    direct: bool = False  # a rollup whose rows are the buckets asked for
    table: str = CANDLES
    order: Order = Order.ASC
    ranged: bool = False
    session: bool = False  # kept to a session
    wraps: bool = False  # the session wraps midnight
    fill: Fill = Fill.NONE
    intraday: bool = False  # buckets shorter than a day (a session filters fill's buckets)
    keyset: bool = False  # only bars closing after %(after_close)s (a page after a cursor)
    live: bool = False  # forming bars of the buckets from %(first)s to %(last)s (live)
    as_of: bool = False  # only source candles closed by %(as_of)s (Plan.as_of)


def shape_of(
    tf_min: int,
    resample: Resample | None,
    options: BarOptions,
    order: Order,
    ranged: bool,
    keyset: bool = False,
    live: bool = False,
    as_of: bool = False,
) -> Shape:
    session = options.session
    direct = (
        resample is not None
        and resample.rollup == tf_min
        and resample.rollup_tz == options.tz
        and session is None
    )
    return Shape(
        resample=resample is not None,
        direct=direct,
        table=ROLLUPS if resample is not None and resample.rollup is not None else CANDLES,
        order=order,
        ranged=ranged,
        session=session is not None,
        wraps=session is not None and session.start > session.end,
        fill=options.fill,
        intraday=tf_min < MINUTES_PER_DAY,
        keyset=keyset,
        live=live,
        as_of=as_of,
    )


def in_session(local: str, shape: Shape) -> str:
    """Whether the local time `local` (an SQL timestamp without zone) is inside the session."""
    t = f"({local})::time"
    if shape.wraps:
        return f"({t} >= %(session_start)s OR {t} < %(session_end)s)"
    return f"({t} >= %(session_start)s AND {t} < %(session_end)s)"


# Of a live change (`q`), whether a row's transaction committed before it: heard before it
# by the listener (`q.before`, notifications come in commit order) or seen by its snapshot
# (%(seen)s). Not `xact < q.xid`: a transaction takes its id at its first write, and one
# that began later may commit first.
COMMITTED_BEFORE = "(xact = ANY(q.before) OR pg_visible_in_snapshot(xact, %(seen)s::pg_snapshot))"


def source_sql(shape: Shape) -> str:
    """The rows bars are made of, in no order."""
    rows = ROLLUP_ROWS if shape.table == ROLLUPS else CANDLE_ROWS
    kept = " AND tz = %(rollup_tz)s" if shape.table == ROLLUPS else ""
    bounds = " AND ts >= %(start)s AND ts <= %(end)s" if shape.ranged else ""
    if shape.keyset:  # bars close after %(after_close)s: their candles start at most a
        # bucket before it (a local day may have 25 hours; 2 hours of margin)
        bounds += (
            " AND (%(after_close)s::timestamptz IS NULL"
            " OR ts >= %(after_close)s::timestamptz - %(stride)s - interval '2 hours')"
        )
    session = f" AND {in_session('ts AT TIME ZONE %(tz)s', shape)}" if shape.session else ""
    if shape.as_of:
        bounds += " AND ts <= %(as_of)s::timestamptz - %(source_stride)s"
    ticker = "%(ticker)s"
    if shape.live:  # a change's series, as the change left it (not later transactions)
        ticker, session = "q.ticker", f"{session} AND (xact = q.xid OR {COMMITTED_BEFORE})"
    return (
        f"SELECT {rows} FROM {shape.table}"
        f" WHERE ticker = {ticker} AND tf_min = %(source)s{kept}{bounds}{session}"
    )


def plain_sql(
    columns: str = COLUMNS,
    ticker: str = "%(ticker)s",
    tf: str = "%(tf)s",
    order: Order = Order.ASC,
    bounds: str = "",
    limit: str = "%(limit)s",
) -> str:
    """A stored series' candles as they are, in time order: `columns` of `candles` for
    `ticker` and `tf` (SQL expressions), within `bounds` (conditions on `ts`, each starting
    with AND), at most `limit` (NULL: all). The index of (ticker, tf_min, ts) serves it."""
    direction = "ASC" if order is Order.ASC else "DESC"
    return (
        f"SELECT {columns} FROM candles WHERE ticker = {ticker} AND tf_min = {tf}{bounds}"
        f" ORDER BY ts {direction} LIMIT {limit}"
    )


def _after(shape: Shape, bucket: str = "bucket") -> str:
    """Only bars that close after %(after_close)s (or at it, %(inclusive)s): a keyset."""
    if not (shape.keyset or shape.fill is not Fill.NONE):
        return ""
    close = _close(shape, bucket)
    return (
        f" AND (%(after_close)s::timestamptz IS NULL OR {close} > %(after_close)s"
        f" OR (%(inclusive)s AND {close} = %(after_close)s))"
    )


def _data(shape: Shape) -> str:
    """CTEs ending in `data`: the bars there are (bucket, open, ..., openint), in order,
    at most %(limit)s."""
    direction = "ASC" if shape.order is Order.ASC else "DESC"
    whole = shape.ranged and shape.resample  # only buckets whole inside the range
    if not shape.resample or shape.direct:
        inside = whole_by(shape, "ts") if whole else ""
        return f"""
data AS (
    SELECT ts AS bucket, o AS open, h AS high, l AS low, c AS close, v AS volume, oi AS openint
    FROM ({source_sql(shape)}) r WHERE true{inside}{_after(shape, "ts")}
    ORDER BY ts {direction} LIMIT %(limit)s
)"""
    inside = " AND bucket >= %(start)s" + whole_by(shape, "bucket") if whole else ""
    inside += _after(shape)
    return f"""
run AS ({source_sql(shape)} ORDER BY ts {direction} LIMIT %(rows)s
), buckets AS ({bucketed("SELECT * FROM run")}
), data AS (
    SELECT bucket, open, high, low, close, volume, openint
    FROM buckets b(bucket, open, high, low, close, volume, openint, n)
    WHERE (%(rows)s::int8 IS NULL OR (SELECT count(*) FROM run) < %(rows)s
           OR {_whole_in_run(shape)}){inside}
    ORDER BY bucket {direction} LIMIT %(limit)s
)"""


def _whole_in_run(shape: Shape) -> str:
    """Of a run of source rows cut short by its row limit, a bucket all of whose rows it
    holds. A bucket of local time is not always one stretch: where a local hour comes twice
    (clocks going back), a 15-minute bucket holds two runs of rows an hour apart, and its
    label is the later one. Oldest first, a bucket is whole when it closes by the end of
    the last row read; newest first, when it opens (an hour earlier, in a zone's local
    time) at or after the first row read."""
    if shape.order is Order.ASC:
        return f"{_close(shape)} <= (SELECT max(ts) FROM run) + make_interval(mins => %(source)s)"
    earliest = "bucket - CASE WHEN %(tz)s = 'UTC' THEN interval '0' ELSE interval '1 hour' END"
    return f"{earliest} >= (SELECT min(ts) FROM run)"


def whole_by(shape: Shape, bucket: str) -> str:
    """A bar ends inside the range when its last source candle opens in it: found from the
    bar's own close (a local day of 23 or 25 hours, a bucket of 5 hours when clocks go
    back), not from its nominal length."""
    return f" AND {_close(shape, bucket)} - %(source_stride)s <= %(end)s"


def _close(shape: Shape, bucket: str = "bucket") -> str:
    """A bar's close time: the next bucket's start (local days of 23 or 25 hours; after a
    bucket that began late, in a gap of local time, the next on the grid)."""
    if shape.resample:
        return instant(f"{start(bucket)} + %(stride)s")
    return f"{bucket} + %(stride)s"


def _filled(shape: Shape) -> str:
    """CTEs after `data` ending in `bars`: every bucket between the first and the last bar
    (within the session's hours, for buckets shorter than a day), those without a candle
    made up: nulls, or the previous close with no volume."""
    if shape.resample:  # the buckets' local starts, from the first bar's to the last's
        local, lo, hi, named = "g", start("lo"), start("hi"), instant("g")
    else:
        local, lo, hi, named = "g AT TIME ZONE %(tz)s", "lo", "hi", "g"
    # a bucket wholly in the local hours that do not exist (clocks going forward) is none;
    # one partly in them is (Lord Howe's 02:00 hour starts at 02:30)
    hours = f" AND {instant('g + %(stride)s')} > {named}" if shape.resample else ""
    if shape.session and shape.intraday:  # a bucket inside the session, or one it opens in
        t = f"({local})::time"
        # how long after the bucket's start the session opens, on its day or the next
        # (20:00-24:00 holds the opening of 22:00-02:00; a time plus 4 hours wraps to 00:00)
        wait = (
            f"CASE WHEN {t} < %(session_start)s THEN %(session_start)s::time - {t}"
            f" ELSE %(session_start)s::time - {t} + interval '24 hours' END"
        )
        hours += f" AND ({in_session(local, shape)} OR {wait} < %(stride)s)"
    if shape.fill is Fill.PREV:
        price, volume, openint = "last_close", "0", "coalesce(last_oi, 0)"
    else:
        price, volume, openint = "'NaN'::float8", "'NaN'::float8", "0"
    # After a cursor, the gap up to the first bar is filled too, from a bucket before it
    # (the keyset keeps those that close after the cursor), when there are candles before.
    before = "%(after_close)s::timestamptz - %(stride)s"
    if shape.resample:
        before = label(before)
    earlier_rows = source_sql(msgspec.structs.replace(shape, ranged=False, keyset=False))
    return f""", first AS (SELECT min(bucket) AS first FROM data
), span AS (
    SELECT CASE WHEN %(after_close)s::timestamptz IS NOT NULL AND EXISTS (
               SELECT 1 FROM ({earlier_rows}) r, first WHERE ts < first.first
               AND ts >= coalesce(%(since)s::timestamptz, '-infinity'))
           THEN least(min(bucket), {before}) ELSE min(bucket) END AS lo,
           max(bucket) AS hi
    FROM data
), labels AS (
    SELECT {named} AS bucket FROM span, generate_series({lo}, {hi}, %(stride)s) g
    WHERE span.hi IS NOT NULL{hours}
    UNION SELECT bucket FROM data
), joined AS (
    SELECT l.bucket, d.open, d.high, d.low, d.close, d.volume, d.openint,
           d.bucket IS NULL AS filled, count(d.bucket) OVER (ORDER BY l.bucket) AS grp
    FROM labels l LEFT JOIN data d ON d.bucket = l.bucket
), earlier AS (  -- the last candle before the first bar shown: the close to fill from
    SELECT c, oi FROM ({earlier_rows}) r
    WHERE ts < (SELECT min(bucket) FROM labels WHERE true{_after(shape)})
    ORDER BY ts DESC LIMIT 1
), carried AS (
    SELECT j.*,
           coalesce(first_value(j.close) OVER g, (SELECT c FROM earlier)) AS last_close,
           coalesce(first_value(j.openint) OVER g, (SELECT oi FROM earlier)) AS last_oi
    FROM joined j WINDOW g AS (PARTITION BY grp ORDER BY bucket)
), bars AS (
    SELECT bucket,
           CASE WHEN filled THEN {price} ELSE open END AS open,
           CASE WHEN filled THEN {price} ELSE high END AS high,
           CASE WHEN filled THEN {price} ELSE low END AS low,
           CASE WHEN filled THEN {price} ELSE close END AS close,
           CASE WHEN filled THEN {volume} ELSE volume END AS volume,
           CASE WHEN filled THEN {openint} ELSE openint END AS openint, filled
    FROM carried
)"""


@functools.lru_cache(maxsize=256)
def bars_sql(shape: Shape) -> bytes:
    direction = "ASC" if shape.order is Order.ASC else "DESC"
    if shape.fill is Fill.NONE:
        ctes, bars, filled = _data(shape), "data", "false"
    else:
        ctes, bars, filled = _data(shape) + _filled(shape), "bars", "filled"
    keyset = _after(shape)
    return f"""WITH {ctes}
SELECT bucket, open, high, low, close, volume, openint, {_close(shape)}, {filled}
FROM {bars} WHERE true{keyset} ORDER BY bucket {direction} LIMIT %(limit)s""".encode()


def bars_params(
    ticker: str,
    tf_min: int,
    resample: Resample | None,
    options: BarOptions,
    *,
    limit: int | None,
    time_range: TimeRange | None = None,
    after_close: datetime | None = None,
    inclusive: bool = False,
    forming: bool = False,
    since: datetime | None = None,
) -> dict[str, Any]:
    """The values of a statement of `bars_sql` (or `forming_sql`). A resampling reads at
    most enough source rows for `limit` buckets, one cut short by the row limit and one
    cut by the start of a range (none when `limit` is None: an export). `after_close`: only
    bars closing after it (and at it, `inclusive`), the gap before the first one filled
    from before it when there are candles before it since `since` (a replay's start)."""
    session: Session | None = options.session
    source_tf = resample.source_tf if resample is not None else tf_min
    rows = None
    if resample is not None and limit is not None:
        per_bucket = tf_min // (source_tf if forming else resample.read_tf)
        rows = limit + per_bucket + 2 if forming else (limit + 2) * per_bucket
        if options.tz != "UTC" and forming:  # read from two hours before (forming._FOLD),
            # and two hours past the last bar sent: a bucket whose local time comes twice has
            # a second run of candles up to that much later, and is final only after it
            rows += 2 * (120 // source_tf)
        if options.tz != "UTC" and not forming:  # a local hour that comes twice, and its margin
            rows += 180 // resample.read_tf
        if after_close is not None and not forming:  # the rows read before the keyset
            rows += (tf_min + 120) // resample.read_tf + 1
    params: dict[str, Any] = {
        "ticker": ticker,
        "source": resample.read_tf if resample is not None and not forming else source_tf,
        "rollup_tz": resample.rollup_tz if resample is not None else "UTC",
        "limit": limit,
        "rows": rows,
        "stride": timedelta(minutes=tf_min),
        "source_stride": timedelta(minutes=source_tf),
        "tz": options.tz,
        "origin": options.origin(tf_min),
        "after_close": after_close,
        "inclusive": inclusive,
        "since": since,
        "session_start": _time(session.start) if session else None,
        "session_end": _time(session.end) if session else None,
    }
    if time_range is not None:
        params |= {"start": time_range.start, "end": time_range.end}
    return params


def _time(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)
