"""Columnar ingest: Parquet, Feather/Arrow and freqtrade files through `marketdata ingest`
against real PostgreSQL; text files read in columns give exactly the rows (or the error)
of the row-by-row parser."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from marketdata.adapters.columnar import SCHEMA
from marketdata.adapters.csv_files import TextCandleFile
from marketdata.domain.errors import DomainError
from marketdata.domain.ingest import IngestOptions, Row
from tests.support import DATA, WARSAW, ingest, reset, table_digest


def text_rows(path: Path, options: IngestOptions = WARSAW) -> list[Row]:
    """The file read row by row, by the domain's parsers (the reference)."""
    return list(TextCandleFile(path, options)._rows())


def columnar_rows(path: Path, options: IngestOptions = WARSAW) -> list[Row]:
    """The file as ingest reads it: in batches (Arrow's CSV reader, or the fallback)."""
    rows: list[Row] = []
    for batch in TextCandleFile(path, options).rows():
        rows += [tuple(r.values()) for r in batch.to_pylist()]  # type: ignore[misc]
    return rows


def table_of_rows(rows: list[Row]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, SCHEMA, strict=True)], SCHEMA)


@pytest.mark.parametrize(
    "name", ["amzn.us.txt", "ko.us.txt", "BTCUSDT-1m-2022-08.csv", "TQBR.SBER_M5.csv"]
)
def test_the_real_text_files_read_in_columns_as_row_by_row(name: str) -> None:
    options = (
        IngestOptions(tz=ZoneInfo("Europe/Moscow"), ticker="SBER", tf_min=5)
        if name.startswith("TQBR")
        else WARSAW
    )
    expected = text_rows(DATA / name, options)
    assert len(expected) > 1000
    assert columnar_rows(DATA / name, options) == expected


HEADER = "ticker,tf_min,ts,open,high,low,close,volume,openint\n"


@pytest.mark.parametrize(
    ("text", "options"),
    [
        # Arrow cannot read these as they are; the row-by-row parser can: the same rows
        (HEADER + "A,5,2024-01-02T10:00:00Z, 1.5 ,2,1,1.5,10,0\n", WARSAW),
        (HEADER + "A,5,1704189600,1,2,1,1.5,10,\nA,5,2024-01-02 10:05,1,2,1,1.5,10,3\n", WARSAW),
        (HEADER + '" A ",5,2024-01-02T10:00:00+01:00,1,2,1,1.5,1e3,0\n', WARSAW),
        # a local time that happens twice (the first is meant) and one that never happens
        (HEADER + "A,5,2024-10-27 02:30,1,2,1,1.5,10,0\n", WARSAW),
        (HEADER + "A,5,2024-03-31 02:30,1,2,1,1.5,10,0\n", WARSAW),
        (
            "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
            "X.US,D,20240102,000000,1,2,1,2,5,0\nX.US,60,20240102,093000,1,2,1,2,5,0\n",
            WARSAW,
        ),
    ],
)
def test_what_arrow_reads_otherwise_is_read_row_by_row(
    tmp_path: Path, text: str, options: IngestOptions
) -> None:
    path = tmp_path / "candles.csv"
    path.write_text(text)
    assert columnar_rows(path, options) == text_rows(path, options)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("A,5,2024-01-02T10:45:00Z,1,2,1,NA,10,0", ":5: close: 'NA' is not a number"),
        ("A,5,2024-01-02T10:45:00Z,1,2,1,nan,10,0", ":5: close: 'nan' is not a finite number"),
        ("A,5,2024-01-02T10:45:00Z,1,2,1,3,10,0", ":5: close: close 3 is outside low..high"),
        ("A,5,2024-01-02T10:45:00Z,1,2,1", ":5: row: 6 fields, the header has 9"),
        ("A,5,yesterday,1,2,1,1,10,0", ":5: ts: 'yesterday' is not a date and time"),
        (",5,2024-01-02T10:45:00Z,1,2,1,1,10,0", ":5: ticker: ''"),
    ],
)
def test_a_bad_line_is_named_after_the_columns_gave_up(
    tmp_path: Path, line: str, message: str
) -> None:
    good = [f"A,5,2024-01-02T10:{m:02d}:00Z,1,2,1,1.5,10,0" for m in (0, 15, 30)]
    path = tmp_path / "candles.csv"
    path.write_text(HEADER + "\n".join([*good, line, good[0]]) + "\n")
    with pytest.raises(DomainError) as columns:
        columnar_rows(path)
    with pytest.raises(DomainError) as rows:
        text_rows(path)
    assert columns.value.message == rows.value.message
    assert message in columns.value.message


def stored_rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT ticker, tf_min, ts, open, high, low, close, volume, openint FROM candles"
            " ORDER BY ticker, tf_min, ts"
        ).fetchall()


def test_parquet_feather_and_arrow_files_load_as_the_text_file(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest(db_url, [DATA / "amzn.us.txt"]) == 0
    expected = stored_rows(db_url)
    table = table_of_rows(text_rows(DATA / "amzn.us.txt"))
    parquet, feathered, stream = (
        tmp_path / "a.parquet",
        tmp_path / "a.feather",
        tmp_path / "a.arrows",
    )
    pq.write_table(table, parquet, row_group_size=1000)
    feather.write_feather(table, feathered)
    with ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table, max_chunksize=999)
    for path in (parquet, feathered, stream):
        reset(db_url)
        assert ingest(db_url, [path]) == 0, capsys.readouterr().err
        assert stored_rows(db_url) == expected
        capsys.readouterr()
        assert ingest(db_url, [path]) == 0
        assert f"{len(expected):,} unchanged" in capsys.readouterr().out


def test_a_freqtrade_file_names_its_pair_and_timeframe(db_url: str, tmp_path: Path) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    frame = pa.table(
        {
            "date": pa.array(
                [start + timedelta(hours=i) for i in range(48)], pa.timestamp("ms", "UTC")
            ),
            "open": [100.0 + i for i in range(48)],
            "high": [101.0 + i for i in range(48)],
            "low": [99.0 + i for i in range(48)],
            "close": [100.5 + i for i in range(48)],
            "volume": [10.0 * i for i in range(48)],
        }
    )
    feather.write_feather(frame, tmp_path / "BTC_USDT-1h.feather")
    pq.write_table(frame, tmp_path / "ETH_USDT-1h-futures.parquet")
    assert (
        ingest(db_url, [tmp_path / "BTC_USDT-1h.feather", tmp_path / "ETH_USDT-1h-futures.parquet"])
        == 0
    )
    with psycopg.connect(db_url) as conn:
        series = conn.execute(
            "SELECT ticker, tf_min, count(*), min(ts), max(close) FROM candles"
            " GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert series == [
        ("BTC_USDT", 60, 48, start, 147.5),
        ("ETH_USDT", 60, 48, start, 147.5),
    ]


def test_a_bad_row_of_a_parquet_file_is_named_and_nothing_is_written(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest(db_url, [DATA / "ko.us.txt"]) == 0
    before = table_digest(db_url)
    rows = text_rows(DATA / "msft.us.txt")
    ticker, tf, ts, o, h, low, _, v, oi = rows[2500]
    rows[2500] = (ticker, tf, ts, o, h, low, h + 1, v, oi)  # row 2501: close above high
    path = tmp_path / "msft.parquet"
    pq.write_table(table_of_rows(rows), path, row_group_size=1000)
    capsys.readouterr()
    assert ingest(db_url, [path]) == 1
    err = capsys.readouterr().err
    assert f"{path}: row 2501: close: close {h + 1:g} is outside low..high" in err
    assert table_digest(db_url) == before


def test_a_file_without_the_columns_or_not_columnar_is_refused(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq.write_table(pa.table({"when": [1, 2], "price": [1.0, 2.0]}), tmp_path / "odd.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    assert ingest(db_url, [tmp_path / "odd.parquet", tmp_path / "junk.parquet"]) == 1
    err = capsys.readouterr().err
    assert "odd.parquet: no ts, open, high, low, close column" in err
    assert "junk.parquet: not a Parquet or Arrow file" in err
    assert stored_rows(db_url) == []
