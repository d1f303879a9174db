"""Candles aggregated into buckets, in SQL: the one text for resampled reads, exports,
replays and the rollups kept at write time, so that all of them agree.

A bucket takes the open of its first candle, the highest high, the lowest low, the close and
open interest of its last candle, and the sum of the volumes. The first and last candles
come from one ordered aggregate of a composite (`candle_edge`): each ordered aggregate sorts
its group, so one is a third of the sorting of three.
"""


def label(at: str) -> str:
    """The bucket of the instant `at` (an SQL expression): counted in local time of a zone
    (its 23- and 25-hour days included) from `origin` (bar_options.BarOptions.origin: the
    epoch, weeks from a Monday, plus the day start), labelled by its start. The one rule for
    reads, replays and live bars (the rollups' own is the database's `candle_buckets`, which
    counts from the same origins). Parameters: stride, tz, origin."""
    return f"date_bin(%(stride)s, ({at}) AT TIME ZONE %(tz)s, %(origin)s) AT TIME ZONE %(tz)s"


LOCAL_LABEL = label("ts")

# A candle as the Candle struct has it (the seed's columns may be numeric, openint NULL)
COLUMNS = (
    "ticker, tf_min, ts, open::float8, high::float8, low::float8, close::float8,"
    " volume::float8, coalesce(openint, 0)::int8"
)
# Rows of candles as buckets read them
CANDLE_ROWS = (
    "ts, open::float8 AS o, high::float8 AS h, low::float8 AS l, close::float8 AS c,"
    " volume::float8 AS v, coalesce(openint, 0)::int8 AS oi, 1 AS n"
)
ROLLUP_ROWS = (
    "ts, open AS o, high AS h, low AS l, close AS c, volume AS v, openint AS oi, candles AS n"
)


def bucketed(rows: str, label: str, count: str = "count(*)") -> str:
    """Buckets of `rows` (a query with the columns of CANDLE_ROWS), labelled by `label`:
    bucket, open, high, low, close, volume, openint, and `count` (of the rows read, or
    `sum(n)`: of the stored candles they hold). Not ordered."""
    return f"""
SELECT bucket, (e[1]).open, h, l, (e[array_upper(e, 1)]).close, v,
       (e[array_upper(e, 1)]).openint, n
FROM (
    SELECT {label} AS bucket, array_agg(ROW(o, c, oi)::candle_edge ORDER BY ts) AS e,
           max(h) AS h, min(l) AS l, coalesce(sum(v), 0) AS v, {count}::int8 AS n
    FROM ({rows}) r GROUP BY bucket
) g"""
