"""An answer's JSON made by PostgreSQL (`json_sql`): the bars of a statement of `bars.py`
as the API's JSON objects, written as the API has always written them (`tests/api/
test_bodies.py`: the seed's clients read the same values and types)."""

import functools

import msgspec

from marketdata.domain.bar_options import Fill, Label
from marketdata.domain.candles import Order


def _iso(at: str) -> str:
    """An instant as the API has always written it: ISO 8601, UTC, and six digits of a
    fraction of a second when there is one (as msgspec writes a datetime); the `Z` that
    ends it is the caller's, in the text after it."""
    utc = f"(({at}) AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {utc}) = {utc} THEN replace({utc}::text, ' ', 'T') "
        f"""ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS.US') END"""
    )


def _number(value: str) -> str:
    """A float as JSON, read back as the same float by every client: shortest text that
    round-trips, a whole number with `.0` (so Python's json and pandas read a float, as
    they did from msgspec's `120.0`; PostgreSQL writes whole numbers from 1e15 up with an
    exponent, a float already), NaN (a bar filled with nulls) and infinities as null."""
    # The common case is tested first (NaN and the infinities are not below 1e15): asking
    # it last cost a tenth of the whole statement (pgbench, bench/README.md).
    special = "('NaN', 'Infinity', '-Infinity')"
    return (
        f"CASE WHEN abs({value}) < 1e15 THEN CASE WHEN {value} = trunc({value}) "
        f"THEN {value}::text || '.0' ELSE {value}::text END "
        f"WHEN {value} IN {special} THEN 'null' ELSE {value}::text END"
    )


@functools.lru_cache(maxsize=128)
def json_sql(statement: bytes, label: Label | None, fill: Fill, order: Order) -> bytes:
    """The bars of `statement` (bars_sql's columns) as the API's JSON carries them, made by
    the database: one row of how many bars were read, the JSON objects of the first
    %(keep)s of them, comma-separated, in order (`ts` their open, or their close with
    `label=close`; `ts_close` with a label, `filled` on a filled bar), and the open of the
    last one kept. %(head)s is what every object starts with (`head`).

    Each `||` copies the text so far (32 ns a row, measured): the text between two values
    is one literal, and what is the same on every row one parameter."""
    shown = "closes" if label is Label.CLOSE else "bucket"
    parts = [
        "%(head)s || ",
        _iso(shown),
        """ || 'Z","open":' || """,
        _number("open"),
        """ || ',"high":' || """,
        _number("high"),
        """ || ',"low":' || """,
        _number("low"),
        """ || ',"close":' || """,
        _number("close"),
        """ || ',"volume":' || """,
        _number("volume"),
        """ || ',"openint":' || openint""",
    ]
    if label is not None:
        parts += [""" || ',"ts_close":"' || """, _iso("closes"), """ || 'Z"'"""]
    if fill is not Fill.NONE:
        parts.append(""" || CASE WHEN filled THEN ',"filled":true}' ELSE '}' END""")
    else:
        parts.append(""" || '}'""")
    last = "max" if order is Order.ASC else "min"
    return f"""SELECT count(*),
       coalesce(string_agg({"".join(parts)}, ',' ORDER BY n) FILTER (WHERE n <= %(keep)s), ''),
       {last}(bucket) FILTER (WHERE n <= %(keep)s)
FROM (
    SELECT q.*, row_number() OVER () AS n
    FROM ({statement.decode()}) q(bucket, open, high, low, close, volume, openint, closes, filled)
) s""".encode()


def head(ticker: str, tf_min: int) -> str:
    """The text every JSON object of a series' bars starts with, up to its `ts` value."""
    return f'{{"ticker":{msgspec.json.encode(ticker).decode()},"tf_min":{tf_min},"ts":"'
