"""Bars as they form, in SQL (`forming_sql`): a row per source candle, its bar as it stands
with it, `final` on the bar's last. Replays with `forming` read them, and the live feed
reads the bars a change touched; made of the same pieces as `bars.py`'s statements (the
source rows, sessions, buckets), so that forming bars end as history's bars.
"""

import functools

import msgspec

from marketdata.adapters.postgres.bars import (
    CANDLES,
    COMMITTED_BEFORE,
    Shape,
    in_session,
    source_sql,
    whole_by,
)
from marketdata.adapters.postgres.buckets import instant, label, start


def _last_close(shape: Shape) -> str:
    """When the last source candle a bucket can hold closes: the bucket's close (the next
    bucket's start, in local time), or the end of the last session before it when a session
    leaves the bucket's end out (a day's bar of a 09:30-16:00 session: 16:00)."""
    close = "(local_start + %(stride)s)"
    if not shape.session:
        return instant(close)
    ends = f"(date_trunc('day', {close}) + %(session_end)s)"
    last = (
        f"CASE WHEN {in_session(f'{close} - %(source_stride)s', shape)} THEN {close}"
        f" WHEN {ends} <= {close} THEN {ends} ELSE {ends} - interval '1 day' END"
    )
    return instant(last)


_FORMED = """formed AS (
    SELECT {bucket} AS bucket, ts, first_value(o) OVER b AS open, max(h) OVER b AS high,
           min(l) OVER b AS low, c AS close, sum(v) OVER b AS volume, oi AS openint,
           ts + %(source_stride)s AS closes,
           lead(ts) OVER (ORDER BY ts) IS NOT NULL AND ts = max(ts) OVER whole AS later,
           ts + %(source_stride)s >= {last} AS complete
    FROM src WINDOW b AS (PARTITION BY local_start ORDER BY ts
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
                    whole AS (PARTITION BY local_start)
)"""
# Where clocks go back, a bucket holds two runs of candles an hour apart (up to two, in
# zones that move two): a read that starts in it starts this much earlier, and a bar is
# final after a later candle in another bucket only when none later is in its own.
_FOLD = "CASE WHEN %(tz)s = 'UTC' THEN interval '0' ELSE interval '2 hours' END"


@functools.lru_cache(maxsize=64)
def forming_sql(shape: Shape) -> bytes:
    """Forming bars: a row per source candle, its bar as it stands with that candle (open
    of the bar's first, highest high and lowest low so far, its close, volume so far),
    closing when that candle closes. `final` (the one rule, for replays and live alike) on
    the bar's last candle: a later candle is in another bucket, or the candle closes when the
    last one its bucket can hold does (`_last_close`). Read from the start of the bucket of
    the first candle after the keyset, so each bar is whole; one candle more than asked for
    tells whether the last is final.

    Live (`shape.live`), for each change given (numbered from 1, `i`: its ticker, first and
    last candle, transaction, in the arrays %(tickers)s, %(firsts)s, %(lasts)s, %(xids)s;
    one statement for them all): the bars of the buckets from that of its first candle to
    that of its last, as its transaction left them (what later ones wrote is theirs to send,
    however late the listener hears of it), read from the stored candle before the first
    (whose bar may have become final), with the candle after them (whether the last is
    final); each row also says whether its bar is `complete` (final by its time, not by a
    later candle) and, last, whether the change `began` what follows that stored candle (no
    candle after it but those its transaction wrote first, none it removed: its bar became
    final by this change, not by an earlier one), and every row carries the buckets of the
    first and last candles
    (one row of them when no bar is left)."""
    source = source_sql(msgspec.structs.replace(shape, keyset=False, table=CANDLES))
    formed = _FORMED.format(bucket=instant("local_start"), last=_last_close(shape))
    kept = f" AND {in_session('ts AT TIME ZONE %(tz)s', shape)}" if shape.session else ""
    if shape.live:
        return f"""SELECT q.i, f.* FROM (
    SELECT u.*, u.heard::xid8[] AS before FROM unnest(%(tickers)s::text[],
        %(firsts)s::timestamptz[], %(lasts)s::timestamptz[], %(xids)s::xid8[], %(befores)s::text[])
        WITH ORDINALITY AS u(ticker, first, last, xid, heard, i)) q
CROSS JOIN LATERAL (
    WITH prev AS (
        SELECT max(ts) AS ts FROM ({source}) r WHERE ts < q.first
    ), began AS (
        SELECT NOT EXISTS (SELECT FROM candles WHERE ticker = q.ticker AND tf_min = %(source)s
                           AND ts > (SELECT ts FROM prev)
                           AND ({COMMITTED_BEFORE} OR (xact = q.xid AND revision > 0)){kept})
           AND NOT EXISTS (SELECT FROM candle_changes WHERE xid = q.xid AND kind = 'removed'
                           AND ticker = q.ticker AND tf_min = %(source)s
                           AND last_ts > (SELECT ts FROM prev)) AS began
    ), span AS (
        SELECT {label("coalesce((SELECT ts FROM prev), q.first)")} - {_FOLD} AS lo,
               {instant(start("q.last") + " + %(stride)s")} AS hi
    ), src AS (
        SELECT r.*, {start("ts")} AS local_start FROM ({source}) r, span
        WHERE r.ts >= span.lo AND (r.ts < span.hi OR r.ts = (
            SELECT min(x.ts) FROM ({source}) x, span s WHERE x.ts >= s.hi))
    ), {formed}
    SELECT labels.*, f.bucket, f.open, f.high, f.low, f.close, f.volume, f.openint, f.closes,
           f.later OR f.complete, f.complete, f.ts, (SELECT began FROM began)
    FROM (SELECT {label("q.first")}, {label("q.last")}) labels
    LEFT JOIN (
        SELECT * FROM formed
        WHERE ts >= coalesce((SELECT ts FROM prev), q.first) AND ts < (SELECT hi FROM span)
    ) f ON true
) f
ORDER BY q.i, f.ts""".encode()
    ranged = " AND bucket >= %(start)s" + whole_by(shape, "bucket") if shape.ranged else ""
    return f"""WITH src AS (
    SELECT r.*, {start("ts")} AS local_start FROM ({source}) r
    WHERE %(after_close)s::timestamptz IS NULL
       OR ts >= {label("%(after_close)s::timestamptz - %(source_stride)s")} - {_FOLD}
    ORDER BY ts LIMIT %(rows)s
), {formed}
SELECT bucket, open, high, low, close, volume, openint, closes, later OR complete
FROM formed
WHERE (%(after_close)s::timestamptz IS NULL OR closes > %(after_close)s
       OR (%(inclusive)s AND closes = %(after_close)s)){ranged}
ORDER BY ts LIMIT %(limit)s""".encode()
