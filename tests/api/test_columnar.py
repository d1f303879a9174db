"""Parquet and Arrow IPC exports, read by pandas, polars, DuckDB and pyarrow, equal to the
JSON body with every option; Arrow IPC stream bodies for POST /candles."""

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from marketdata.adapters.postgres import exports
from marketdata.domain.candles import Candle
from tests.factories import series
from tests.support import CANDLE, AppFactory, Client, insert

KEY = "k-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
TYPES = {
    "ticker": pa.string(),
    "tf_min": pa.int32(),
    "ts": pa.timestamp("us", tz="UTC"),
    "open": pa.float64(),
    "high": pa.float64(),
    "low": pa.float64(),
    "close": pa.float64(),
    "volume": pa.float64(),
    "openint": pa.int64(),
}


@pytest.fixture
def client(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    insert(db_url, series("AMZN.US", 3000) + series("MSFT.US", 5))
    with app_factory(api_keys=KEY) as client:
        yield client


def table_of(body: bytes, output: str) -> pa.Table:
    if output == "parquet":
        return pq.read_table(io.BytesIO(body))
    return ipc.open_stream(body).read_all()


def as_json(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as the JSON body writes candles (absent ts_close/filled omitted)."""
    rows = []
    for row in table.to_pylist():
        for name in ("ts", "ts_close"):
            if row.get(name) is not None:
                row[name] = row[name].astimezone(UTC).isoformat().replace("+00:00", "Z")
        if row.get("filled") is False:
            del row["filled"]
        rows.append(row)
    return rows


@pytest.mark.parametrize("output", ["parquet", "arrow"])
@pytest.mark.parametrize(
    "query",
    [
        "/candles?ticker=AMZN.US&limit=5000",
        "/candles?ticker=AMZN.US&order=desc&limit=777",
        "/candles?ticker=AMZN.US&tf_min=60&tz=America/New_York&limit=100",
        "/candles?ticker=AMZN.US&tf_min=15&label=close&fill=prev&session=09:30-16:00&limit=300",
        "/candles/range?ticker=AMZN.US&start=2024-01-03&end=2024-01-09T12:00:00Z&tf_min=30",
        "/candles/range?ticker=AMZN.US&start=2024-01-02&end=2024-02-01&fill=null&tf_min=1440",
    ],
)
def test_an_export_is_the_json_body_in_columns(client: Client, query: str, output: str) -> None:
    expected = []
    page = client.get(query).json()
    expected += page["data"]
    while "next" in page:  # the JSON's pages, followed: the export has no cap
        page = client.get(f"{query}&cursor={page['next']}").json()
        expected += page["data"]
    response = client.get(f"{query}&format={output}")
    assert response.status_code == 200
    assert response.headers["content-type"] == (PARQUET if output == "parquet" else ARROW)
    table = table_of(response.content, output)
    for name, kind in TYPES.items():
        assert table.schema.field(name).type == kind
    got = as_json(table)
    assert len(got) == len(expected) > 0
    assert got == expected


def test_every_reader_reads_the_exports(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "COLUMN_CHUNK", 1000)  # several record batches
    json_body = client.get("/candles?ticker=AMZN.US&limit=5000").json()["data"]
    parquet = client.get("/candles?ticker=AMZN.US", headers={"Accept": PARQUET})
    assert parquet.headers["content-type"] == PARQUET
    path = tmp_path / "candles.parquet"
    path.write_bytes(parquet.content)
    pandas = pd.read_parquet(path)
    assert len(pandas) == 3000
    assert str(pandas["ts"].dtype) == "datetime64[us, UTC]"
    assert pandas["close"].tolist() == [c["close"] for c in json_body[:3000]]
    polars = pl.read_parquet(path)
    assert polars["volume"].to_list() == [c["volume"] for c in json_body[:3000]]
    assert polars.schema["ts"] == pl.Datetime("us", "UTC")
    [(low, count)] = duckdb.sql(f"SELECT min(low), count(*) FROM '{path}'").fetchall()
    assert (low, count) == (min(c["low"] for c in json_body), 3000)
    stream = client.get("/candles?ticker=AMZN.US", headers={"Accept": ARROW})
    reader = ipc.open_stream(stream.content)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [1000, 1000, 1000]  # streamed in record batches
    assert sum(b.num_rows for b in batches) == 3000
    frame = pl.from_arrow(pa.Table.from_batches(batches))
    assert isinstance(frame, pl.DataFrame)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")


def test_nothing_to_export_is_404_in_json(client: Client) -> None:
    response = client.get("/candles?ticker=NOPE&format=parquet")
    assert response.status_code == 404
    assert "NOPE" in response.json()["error"]
    empty = client.get("/candles/range?ticker=AMZN.US&start=2030-01-01&end=2030-02-01&format=arrow")
    assert empty.status_code == 404


def arrow_body(rows: list[dict[str, Any]], **types: pa.DataType) -> bytes:
    table = pa.Table.from_pylist(rows)
    for name, kind in types.items():
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(kind))
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    return sink.getvalue()


def candle_row(minute: int, **changes: Any) -> dict[str, Any]:
    return {**CANDLE, "ts": datetime(2024, 1, 2, 14, minute, tzinfo=UTC), **changes}


def test_an_arrow_stream_body_is_written(client: Client) -> None:
    body = arrow_body([candle_row(m) for m in range(0, 30, 5)])
    response = client.post("/candles", content=body, headers={**AUTH, "Content-Type": ARROW})
    assert response.status_code == 200, response.text
    assert response.json() == {"rows": 6, "inserted": 6, "updated": 0, "unchanged": 0}
    again = client.post("/candles", content=body, headers={**AUTH, "Content-Type": ARROW})
    assert again.json()["unchanged"] == 6
    data = client.get("/candles?ticker=W.US").json()["data"]
    assert [c["ts"] for c in data][:2] == ["2024-01-02T14:00:00Z", "2024-01-02T14:05:00Z"]


def stored_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM candles WHERE ticker = 'W.US'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([candle_row(0), candle_row(5), candle_row(10, close=50.0)], "body: row 3: close"),
        ([candle_row(0), candle_row(5, low=12.0)], "body: row 2: low"),
        (
            [candle_row(0), candle_row(5), candle_row(10), candle_row(15, ticker="")],
            "row 4: ticker",
        ),
        ([candle_row(0), candle_row(5, volume=-1.0)], "body: row 2: volume"),
        ([candle_row(0), candle_row(0)], "more than once"),
        ([candle_row(0), candle_row(5, open=float("inf"))], "body: row 2: open"),
    ],
)
def test_a_bad_arrow_row_is_named_and_nothing_is_written(
    client: Client, db_url: str, rows: list[dict[str, Any]], message: str
) -> None:
    response = client.post(
        "/candles", content=arrow_body(rows), headers={**AUTH, "Content-Type": ARROW}
    )
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    assert stored_count(db_url) == 0


def test_a_body_that_is_not_arrow_is_422(client: Client) -> None:
    response = client.post("/candles", content=b"nope", headers={**AUTH, "Content-Type": ARROW})
    assert response.status_code == 422
    assert "not an Arrow IPC stream" in response.json()["error"]


def test_candle_struct_has_the_exported_columns() -> None:
    # the export's columns follow the JSON body's: a field added to Candle must be exported
    assert [
        f for f in Candle.__struct_fields__ if f not in ("ts_close", "filled", "final", "revision")
    ] == list(TYPES)
