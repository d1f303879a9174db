"""The JSON of candles is made by the database now (no Python object per candle), and some
numbers are written differently: `1e+16` for `1e16`, `1e-07` for `1e-7`. Every client reads
the same values of the same types as from the body the service wrote before: Python's json
(a whole price is still a float, so a pandas column stays float64), a client built on the
seed's pydantic models, and a browser (Node's JSON.parse, the engine of Chromium)."""

import json
import math
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import msgspec
import pandas as pd
import pydantic
import pytest

from marketdata.domain.candles import Candle
from tests.support import Client, insert

# values a number's text can differ on: whole, huge, tiny, inexact, negative zero
VALUES = [120.0, 239.98, 1e16, 1.5e21, 1e-7, 0.1 + 0.2, 123456789.123, -0.0, 5e-324, 7.0]


class SeedCandle(pydantic.BaseModel):
    """The candle of the seed service's models (its README: Pydantic v2, `float` prices)."""

    ticker: str
    tf_min: int
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    openint: int


class SeedCandles(pydantic.BaseModel):
    data: list[SeedCandle]
    count: int


@pytest.fixture
def stored(db_url: str) -> list[Candle]:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    candles = [
        Candle("N", 5, start + timedelta(minutes=5 * i), v, max(v, 1.0) * 2, v, v, abs(v), i)
        for i, v in enumerate(VALUES)
    ]
    # and one at a fraction of a second
    at = start + timedelta(days=1, microseconds=500_000)
    odd = Candle("N", 5, at, 1.0, 1.0, 1.0, 1.0, 1.0, 0)
    insert(db_url, [*candles, odd])
    return [*candles, odd]


def before(candles: list[Candle]) -> bytes:
    """The body the service wrote before: msgspec's encoding of the candles."""
    return msgspec.json.encode({"data": candles, "count": len(candles)})


def node_reads_the_same(a: bytes, b: bytes) -> bool:
    script = (
        "const [a, b] = process.argv.slice(1).map(JSON.parse);"
        "const same = Object.is;"  # -0 is not 0
        "const rows = a.data.every((r, i) => Object.keys(r).every(k => same(r[k], b.data[i][k]))"
        " && Object.keys(r).length === Object.keys(b.data[i]).length);"
        "process.stdout.write(String(rows && a.count === b.count));"
    )
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    done = subprocess.run(
        ["node", "-e", script, a.decode(), b.decode()], capture_output=True, text=True, check=True
    )
    return done.stdout == "true"


def test_clients_read_the_database_s_json_as_the_service_s_own(
    client: Client, stored: list[Candle]
) -> None:
    now = client.get("/candles?ticker=N&limit=100")
    assert now.status_code == 200
    body = now.content
    assert b'"open":1e+16,' in body  # the text did change: the values must not
    old = before(stored)
    assert SeedCandles.model_validate_json(body) == SeedCandles.model_validate_json(old)
    parsed, was = json.loads(body)["data"], json.loads(old)["data"]
    assert parsed == was  # Python: equal values, equal keys ...
    assert [[type(v) for v in c.values()] for c in parsed] == [  # ... of the same types
        [type(v) for v in c.values()] for c in was
    ]
    assert [c["ts"] for c in parsed] == [c["ts"] for c in was]
    assert parsed[-1]["ts"] == "2024-01-03T14:30:00.500000Z"
    assert datetime.fromisoformat(parsed[-1]["ts"]) == stored[-1].ts
    assert (pd.DataFrame(parsed).dtypes == pd.DataFrame(was).dtypes).all()
    assert math.copysign(1, parsed[7]["open"]) == -1  # negative zero kept
    assert node_reads_the_same(body, old)


def test_values_that_are_no_numbers_come_as_nulls_and_empty_fields(
    client: Client, db_url: str
) -> None:
    # another program may write NaN or an infinity: JSON has no such numbers, a CSV reader
    # would take "inf" for text
    at = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    insert(db_url, [Candle("NN", 5, at, 1.0, math.inf, -math.inf, math.nan, 2.0, 0)])
    body = client.get("/candles?ticker=NN").json()["data"][0]
    assert (body["high"], body["low"], body["close"]) == (None, None, None)
    csv = client.get("/candles?ticker=NN&format=csv").text.splitlines()[1]
    assert csv == "NN,5,2024-01-02T14:30:00Z,1.0,,,,2.0,0"
