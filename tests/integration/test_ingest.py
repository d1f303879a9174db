"""`marketdata ingest` on excerpts of the real files (tests/data), against real PostgreSQL."""

import asyncio
import gzip
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from marketdata.domain.ingest import IngestOptions
from tests.support import DATA, data_lines, ingest, ingest_async, table_digest

STOOQ = ["amzn.us.txt", "ibm.us.txt", "jpm.us.txt", "ko.us.txt", "msft.us.txt", "nvda.us.txt"]


def rows_in(name: str) -> int:
    """Rows of a file of tests/data, counted without the code under test."""
    lines = [line for line in (DATA / name).read_bytes().split(b"\r\n") if line]
    return len(lines) if name.startswith(("BTC", "ETH")) else len(lines) - 1


def stored(url: str, ticker: str, tf_min: int, ts: datetime) -> tuple[object, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT open, high, low, close, volume, openint FROM candles"
            " WHERE ticker = %s AND tf_min = %s AND ts = %s",
            (ticker, tf_min, ts),
        ).fetchone()


def test_the_real_files_load_with_their_counts_and_values(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest(db_url, [DATA / name for name in STOOQ]) == 0
    assert ingest(db_url, [DATA / "BTCUSDT-1m-2022-08.csv", DATA / "ETHUSDT-1m-2022-08.csv"]) == 0
    sber = IngestOptions(tz=ZoneInfo("Europe/Moscow"), ticker="SBER", tf_min=5)
    assert ingest(db_url, [DATA / "TQBR.SBER_M5.csv"], sber) == 0
    with psycopg.connect(db_url) as conn:
        counts = dict(conn.execute("SELECT ticker, count(*) FROM candles GROUP BY 1").fetchall())
    expected = {name.split(".")[0].upper() + ".US": rows_in(name) for name in STOOQ}
    assert expected["AMZN.US"] == 3419  # tests/data/SOURCES.md
    assert expected["IBM.US"] == 1164
    binance = {"BTCUSDT": rows_in("BTCUSDT-1m-2022-08.csv"), "ETHUSDT": 1440}
    assert counts == {**expected, **binance, "SBER": rows_in("TQBR.SBER_M5.csv")}
    warsaw = ZoneInfo("Europe/Warsaw")
    for name in STOOQ:
        for fields in (data_lines(DATA / name)[0], data_lines(DATA / name)[-1]):
            ticker, per, day, clock, o, h, low, c, v, oi = fields
            local = datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=warsaw)
            ts = local.astimezone(UTC)
            assert stored(db_url, ticker, int(per), ts) == (
                float(o),
                float(h),
                float(low),
                float(c),
                float(v),
                int(oi),
            )
    # AMZN's first bar: 15:30 in Warsaw is 14:30 UTC (09:30 in New York)
    assert stored(db_url, "AMZN.US", 5, datetime(2026, 1, 26, 14, 30, tzinfo=UTC)) is not None
    btc = (DATA / "BTCUSDT-1m-2022-08.csv").read_text().splitlines()[-1].split(",")
    ts = datetime.fromtimestamp(int(btc[0]) / 1000, UTC)
    assert stored(db_url, "BTCUSDT", 1, ts) == (
        float(btc[1]),
        float(btc[2]),
        float(btc[3]),
        float(btc[4]),
        float(btc[5]),
        0,
    )
    # SBER: Moscow time (UTC+3) to UTC; its first row, read from the file itself
    day, o, h, low, c, v = data_lines(DATA / "TQBR.SBER_M5.csv")[0]
    moscow = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/Moscow"))
    assert stored(db_url, "SBER", 5, moscow.astimezone(UTC)) == (
        float(o),
        float(h),
        float(low),
        float(c),
        float(v),
        0,
    )
    assert "3,419 rows read, 3,419 inserted" in capsys.readouterr().out


def test_reimporting_changes_nothing(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest(db_url, [DATA / "amzn.us.txt"]) == 0
    before = table_digest(db_url)
    capsys.readouterr()
    assert ingest(db_url, [DATA / "amzn.us.txt"]) == 0
    assert "0 inserted, 0 updated, 3,419 unchanged" in capsys.readouterr().out
    assert table_digest(db_url) == before


def test_a_changed_candle_is_updated(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest(db_url, [DATA / "ko.us.txt"]) == 0
    lines = (DATA / "ko.us.txt").read_text().splitlines()
    fields = lines[10].split(",")
    fields[8] = "999999"  # volume
    lines[10] = ",".join(fields)
    changed = tmp_path / "ko.us.txt"
    changed.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert ingest(db_url, [changed]) == 0
    assert "0 inserted, 1 updated, 1,163 unchanged" in capsys.readouterr().out


def test_one_broken_row_in_the_middle_writes_nothing_and_names_the_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest(db_url, [DATA / "msft.us.txt"]) == 0
    before = table_digest(db_url)
    lines = (DATA / "nvda.us.txt").read_text().splitlines()
    fields = lines[999].split(",")  # line 1000 of the file
    fields[7] = "abc"
    lines[999] = ",".join(fields)
    broken = tmp_path / "nvda.us.txt"
    broken.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert ingest(db_url, [broken]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:1000: <CLOSE>: 'abc' is not a number" in err
    assert "nothing of" in err
    assert table_digest(db_url) == before


def test_an_ohlc_violation_is_refused(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "X.US,5,20260126,153000,10,11,9,10.5,100,0\n"
        "X.US,5,20260126,153500,10,11,9,12,100,0\n"
    )
    assert ingest(db_url, [path]) == 1
    assert ":3: close: close 12 is outside low..high 9..11" in capsys.readouterr().err
    assert table_digest(db_url)[0] == 0


def test_stooq_daily_and_intraday_side_by_side(db_url: str, tmp_path: Path) -> None:
    daily = tmp_path / "ko_d.txt"
    daily.write_text(
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "KO.US,D,20260126,000000,72.89,73.5,72.5,73.1,9000000,0\n"
    )
    # a daily bar is dated, not timed: midnight of its day, taken as UTC
    assert ingest(db_url, [daily, DATA / "ko.us.txt"], IngestOptions(tz=UTC)) == 0
    with psycopg.connect(db_url) as conn:
        counts = dict(conn.execute("SELECT tf_min, count(*) FROM candles GROUP BY 1").fetchall())
    assert counts == {1440: 1, 5: rows_in("ko.us.txt")}
    assert stored(db_url, "KO.US", 1440, datetime(2026, 1, 26, tzinfo=UTC)) is not None


def test_gzip_is_detected_by_content(db_url: str, tmp_path: Path) -> None:
    packed = tmp_path / "ibm.us.data"  # no .gz suffix on purpose
    packed.write_bytes(gzip.compress((DATA / "ibm.us.txt").read_bytes()))
    assert ingest(db_url, [packed]) == 0
    plain = table_digest(db_url)
    assert plain[0] == rows_in("ibm.us.txt")
    assert ingest(db_url, [DATA / "ibm.us.txt"]) == 0
    assert table_digest(db_url) == plain


def test_the_same_candle_twice_in_one_file_is_refused(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "twice.csv"
    path.write_text(
        "ticker,tf_min,ts,open,high,low,close\n"
        "A,5,2024-01-02T09:30:00Z,1,2,0.5,1.5\nA,5,2024-01-02T09:30:00Z,1,2,0.5,1.4\n"
    )
    assert ingest(db_url, [path]) == 1
    assert "more than once" in capsys.readouterr().err
    assert table_digest(db_url)[0] == 0


def test_two_ingests_of_one_file_at_once_end_consistent(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "jpm.us.txt"
    shutil.copy(DATA / "jpm.us.txt", copy)

    async def both() -> list[int]:
        return list(
            await asyncio.gather(
                ingest_async(db_url, [DATA / "jpm.us.txt"]), ingest_async(db_url, [copy])
            )
        )

    capsys.readouterr()
    assert asyncio.run(both()) == [0, 0]
    inserted = re.findall(r"([\d,]+) inserted", capsys.readouterr().out)
    jpm = rows_in("jpm.us.txt")
    assert sum(int(n.replace(",", "")) for n in inserted) == jpm  # each candle once
    alone = table_digest(db_url)
    assert alone[0] == jpm
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles, candle_series")
    assert ingest(db_url, [DATA / "jpm.us.txt"]) == 0
    assert table_digest(db_url) == alone


def test_dry_run_writes_nothing(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest(db_url, [DATA / "amzn.us.txt"], dry_run=True) == 0
    assert "dry run" in capsys.readouterr().out
    assert table_digest(db_url)[0] == 0
