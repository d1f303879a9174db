"""Parsing candle files, and bodies as the HTTP edge decodes them: pure functions, no I/O."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from marketdata.domain.errors import InvalidParameter
from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, ingest_options
from marketdata.domain.layouts import parser_for, rows_from_csv
from marketdata.entrypoints.http.writes import rows_from_json, rows_from_ndjson

WARSAW = ZoneInfo("Europe/Warsaw")
STOOQ_HEADER = "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>"


UTC_OPTIONS = IngestOptions()


def parse_text(text: str, options: IngestOptions = UTC_OPTIONS) -> list[tuple[object, ...]]:
    return list(rows_from_csv(text, options, "body"))


def test_stooq_intraday_in_warsaw_time_becomes_utc() -> None:
    rows = parse_text(
        f"{STOOQ_HEADER}\nAMZN.US,5,20260126,153000,239.98,240.94,239.16,239.21,1278304,0\n"
        "AMZN.US,5,20260309,143000,1,2,0.5,1.5,10,0\n",
        IngestOptions(tz=WARSAW),
    )
    assert rows[0] == (
        "AMZN.US",
        5,
        datetime(2026, 1, 26, 14, 30, tzinfo=UTC),
        239.98,
        240.94,
        239.16,
        239.21,
        1278304.0,
        0,
    )
    # 9 March: US on summer time, Europe not yet: 14:30 in Warsaw is 13:30 UTC
    assert rows[1][2] == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)


def test_stooq_daily_weekly_monthly_periods() -> None:
    rows = parse_text(
        f"{STOOQ_HEADER}\nKO.US,D,20260126,000000,1,2,0.5,1.5,10,0\n"
        "KO.US,W,20260126,000000,1,2,0.5,1.5,10,0\nKO.US,M,20260101,000000,1,2,0.5,1.5,10,0\n"
    )
    assert [r[1] for r in rows] == [1440, 10080, 43200]
    assert rows[0][2] == datetime(2026, 1, 26, tzinfo=UTC)


def test_finam_without_openint_and_fractional_volume() -> None:
    rows = parse_text(
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>\n"
        "SBER,15,20220104,100000,293.5,294,293,293.8,1234.5\n"
    )
    assert rows[0][1] == 15
    assert rows[0][7] == 1234.5
    assert rows[0][8] == 0


def test_csv_header_aliases_are_case_insensitive() -> None:
    rows = parse_text(
        "Symbol,Timestamp,O,H,L,C,Vol\nBTC,2022-08-01T00:00:00Z,1,2,0.5,1.5,3\n",
        IngestOptions(tf_min=1),
    )
    assert rows == [("BTC", 1, datetime(2022, 8, 1, tzinfo=UTC), 1.0, 2.0, 0.5, 1.5, 3.0, 0)]


def test_csv_without_ticker_needs_the_option() -> None:
    text = (
        "datetime,open,high,low,close,volume\n"
        "2021-01-21 15:20:00,274.5,275.18,274.42,275.08,92136\n"
    )
    with pytest.raises(BadFile, match="--ticker"):
        parse_text(text, IngestOptions(tf_min=5))
    with pytest.raises(BadFile, match="--tf-min"):
        parse_text(text, IngestOptions(ticker="SBER"))
    rows = parse_text(text, IngestOptions(ticker="SBER", tf_min=5, tz=ZoneInfo("Europe/Moscow")))
    assert rows[0][:3] == ("SBER", 5, datetime(2021, 1, 21, 12, 20, tzinfo=UTC))


def test_csv_separate_date_and_time_columns_and_epoch_times() -> None:
    rows = parse_text(
        "ticker,tf_min,date,time,open,high,low,close\nA,5,2024-01-02,09:30:00,1,2,0.5,1.5\n"
    )
    assert rows[0][2] == datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
    for stamp in ("1704187800", "1704187800000", "1704187800000000"):
        rows = parse_text(f"ticker,tf_min,ts,open,high,low,close\nA,5,{stamp},1,2,0.5,1.5\n")
        assert rows[0][2] == datetime(2024, 1, 2, 9, 30, tzinfo=UTC)


def test_binance_klines_take_ticker_and_interval_from_the_name() -> None:
    first = [
        "1659312000000",
        "23290.10",
        "23290.10",
        "23260.00",
        "23275.80",
        "893.652",
        "1659312059999",
        "20795627.3",
        "7090",
        "245.964",
        "5723953.899",
    ]
    parse, is_header = parser_for(first, IngestOptions(), "f", "BTCUSDT-1m-2022-08.csv")
    assert not is_header
    assert parse(first, 1) == (
        "BTCUSDT",
        1,
        datetime(2022, 8, 1, tzinfo=UTC),
        23290.1,
        23290.1,
        23260.0,
        23275.8,
        893.652,
        0,
    )
    _, _ = parser_for(first, IngestOptions(), "f", "ETHUSDT-4h-2022-08.csv")
    with pytest.raises(BadFile, match="--ticker"):
        parser_for(first, IngestOptions(), "f", "klines.csv")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("A,5,20240102,093000,1,2,0.5,abc,10,0", "prices.csv:3: <CLOSE>: 'abc' is not a number"),
        ("A,5,20240102,093000,1,2,0.5,nan,10,0", "prices.csv:3: <CLOSE>: 'nan' is not a finite"),
        ("A,5,2024010,093000,1,2,0.5,1,10,0", "prices.csv:3: <DATE>/<TIME>"),
        ("A,5,20240102,093000,1,2,0.5,1,10", "prices.csv:3: row: 9 fields, the header has 10"),
        ("A,X,20240102,093000,1,2,0.5,1,10,0", "prices.csv:3: <PER>: 'X' is not a period"),
        ("A,5,20240102,093000,3,2,0.5,1,10,0", "prices.csv:3: open: open 3 is outside"),
        ("A,5,20240102,093000,1,2,0.5,2.5,10,0", "prices.csv:3: close: close 2.5 is outside"),
        ("A,5,20240102,093000,1,2,2.5,1,10,0", "prices.csv:3: low: low 2.5 is above high 2"),
        ("A,5,20240102,093000,1,2,0.5,1,-1,0", "prices.csv:3: volume: volume -1 is negative"),
        ("A,5,20240102,093000,1,2,0.5,1,1,0.5", "prices.csv:3: <OPENINT>: '0.5' is not a whole"),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_field(row: str, message: str) -> None:
    good = "A,5,20240102,092500,1,2,0.5,1,10,0"
    first = STOOQ_HEADER.split(",")
    parse, _ = parser_for(first, IngestOptions(), "prices.csv", "prices.csv")
    parse(good.split(","), 2)
    with pytest.raises(BadRow) as caught:
        parse(row.split(","), 3)
    assert str(caught.value).startswith(message)


def test_json_body_rows_and_errors() -> None:
    body = (
        b'[{"ticker":"A","tf_min":5,"ts":"2024-01-02T09:30:00+01:00","open":1,"high":2,'
        b'"low":0.5,"close":1.5,"volume":3},'
        b'{"ticker":"A","tf_min":5,"ts":"2024-01-02T09:35:00","open":1,"high":2,"low":0.5,'
        b'"close":1.5}]'
    )
    rows = rows_from_json(body)
    assert rows[0][2] == datetime(2024, 1, 2, 8, 30, tzinfo=UTC)
    assert rows[1][2] == datetime(2024, 1, 2, 9, 35, tzinfo=UTC)  # naive means UTC
    assert rows[1][7:] == (0.0, 0)
    with pytest.raises(BadRow, match=r"^body:2: close: Expected float"):
        rows_from_json(body.replace(b'"close":1.5}]', b'"close":"x"}]'))
    with pytest.raises(BadRow, match=r"^body:1: ticker"):
        rows_from_json(b'[{"tf_min":5}]')
    with pytest.raises(BadRow):
        rows_from_json(b"{not json")


def test_ndjson_body_names_the_line() -> None:
    line = (
        b'{"ticker":"A","tf_min":5,"ts":"2024-01-02T09:30:00Z",'
        b'"open":1,"high":2,"low":0.5,"close":1.5}'
    )
    assert len(rows_from_ndjson(line + b"\n\n" + line.replace(b"09:30", b"09:35"))) == 2
    with pytest.raises(BadRow, match=r"^body:3: close: close 9 is outside"):
        rows_from_ndjson(line + b"\n" + line + b"\n" + line.replace(b'"close":1.5', b'"close":9'))


def test_import_options_are_checked_by_the_value_objects() -> None:
    assert ingest_options("Europe/Warsaw", "SBER", 5).tf_min == 5
    with pytest.raises(InvalidParameter, match="tz: 'Mars/Olympus' is not a known time zone"):
        ingest_options("Mars/Olympus")
    with pytest.raises(InvalidParameter, match="tf_min: must be a positive number"):
        ingest_options(tf_min=0)
    with pytest.raises(InvalidParameter, match="ticker: must not contain control characters"):
        ingest_options(ticker="A\x00B")
