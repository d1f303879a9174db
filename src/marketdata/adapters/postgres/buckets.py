"""Candles aggregated into buckets, in SQL: the one text for resampled reads, exports,
replays and the rollups kept at write time, so that all of them agree.

A bucket takes the open of its first candle, the highest high, the lowest low, the close and
open interest of its last candle, and the sum of the volumes. The first and last candles
come from one ordered aggregate of a composite (`candle_edge`): each ordered aggregate sorts
its group, so one is a third of the sorting of three.
"""


def start(at: str) -> str:
    """The local time the bucket of the instant `at` (an SQL expression) starts at: counted
    in local time of a zone (its 23- and 25-hour days included) from `origin`
    (bar_options.BarOptions.origin: the epoch, weeks from a Monday, plus the day start).
    Parameters: stride, tz, origin."""
    return f"date_bin(%(stride)s, ({at}) AT TIME ZONE %(tz)s, %(origin)s)"


def instant(local: str) -> str:
    """When the local time `local` (an SQL expression) of %(tz)s happens: where clocks go
    back, the later of its two instants (standard time, as PostgreSQL reads it); where they
    go forward past it, when the gap ends, the first whole minute whose local time is past
    it (PostgreSQL's reading, the offset before the change, is later: Chatham's 03:00 would
    be its 04:00). A bucket that starts in the gap so holds what is left of it."""
    at = f"(({local}) AT TIME ZONE %(tz)s)"
    gap_end = (  # (an alias no expression given here names)
        f"(SELECT min(gap_minute) FROM generate_series({at} - ({at} AT TIME ZONE %(tz)s"
        f" - ({local})), {at}, interval '1 minute') gap_minute"
        f" WHERE gap_minute AT TIME ZONE %(tz)s >= ({local}))"
    )
    return (  # (UTC first: one conversion where it is the zone, as most reads are)
        f"CASE WHEN %(tz)s = 'UTC' THEN {at} WHEN {at} AT TIME ZONE %(tz)s = ({local})"
        f" THEN {at} ELSE {gap_end} END"
    )


def label(at: str) -> str:
    """The bucket of the instant `at`, labelled by when it starts (`start`, `instant`): the
    one rule for reads, replays and live bars (the rollups' own is the database's
    `candle_buckets`, which counts from the same origins, and whose days and weeks start at
    local midnights, which no change of clocks since 1970 has skipped but at its start)."""
    return instant(start(at))


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


def bucketed(rows: str, count: str = "count(*)") -> str:
    """Buckets of `rows` (a query with the columns of CANDLE_ROWS), grouped by their local
    start and labelled once each (`label`): bucket, open, high, low, close, volume,
    openint, and `count` (of the rows read, or `sum(n)`: of the stored candles they hold).
    Not ordered."""
    return f"""
SELECT {instant("local_start")} AS bucket, (e[1]).open, h, l, (e[array_upper(e, 1)]).close, v,
       (e[array_upper(e, 1)]).openint, n
FROM (
    SELECT {start("ts")} AS local_start, array_agg(ROW(o, c, oi)::candle_edge ORDER BY ts) AS e,
           max(h) AS h, min(l) AS l, coalesce(sum(v), 0) AS v, {count}::int8 AS n
    FROM ({rows}) r GROUP BY local_start
) g"""
