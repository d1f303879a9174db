"""A database whose administrator set other session defaults (`ALTER DATABASE ... SET`: a
day-first DateStyle, floats written short, another time zone, another IntervalStyle)
answers as any other: the service's connections set what its SQL relies on."""

import asyncio
import json
from collections.abc import Callable

import psycopg

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from tests.support import AppFactory, run_sql

# values whose shortest round-trip text needs 17 digits: written short, they read back as
# other floats
OPEN, VOLUME = 0.30000000000000004, 1234.5600000000002


def test_answers_do_not_follow_a_databases_own_session_defaults(
    database_factory: Callable[[], str], app_factory: AppFactory
) -> None:
    url = database_factory()
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    for setting in (
        "datestyle = 'SQL, DMY'",
        "extra_float_digits = 0",
        "timezone = 'Asia/Kathmandu'",
        "intervalstyle = 'sql_standard'",
    ):
        run_sql(url, f'ALTER DATABASE "{name}" SET {setting}')
    asyncio.run(migrate(DatabaseConfig(url=url)))
    with app_factory(url=url) as client:
        run_sql(
            url,
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume) VALUES"
            f" ('ZZ', 1, '2024-03-01 10:00Z', {OPEN}, 1.5, 0.25, 0.75, {VOLUME}),"
            f" ('ZZ', 1, '2024-03-01 10:01:30.5Z', {OPEN}, 1.5, 0.25, 0.75, {VOLUME})",
        )
        stored = client.get("/candles", params={"ticker": "ZZ", "tf_min": 1})
        assert stored.status_code == 200, stored.text
        rows = json.loads(stored.text)["data"]
        assert [r["ts"] for r in rows] == ["2024-03-01T10:00:00Z", "2024-03-01T10:01:30.500000Z"]
        assert {r["open"] for r in rows} == {OPEN}
        assert {r["volume"] for r in rows} == {VOLUME}
        # a rollup (the triggers ran in the writer's session, with its settings)
        hour = client.get("/candles", params={"ticker": "ZZ", "tf_min": 60})
        assert json.loads(hour.text)["data"] == [
            {
                "ticker": "ZZ",
                "tf_min": 60,
                "ts": "2024-03-01T10:00:00Z",
                "open": OPEN,
                "high": 1.5,
                "low": 0.25,
                "close": 0.75,
                "volume": VOLUME + VOLUME,
                "openint": 0,
            }
        ]
        csv = client.get("/candles", params={"ticker": "ZZ", "tf_min": 1, "format": "csv"})
        assert f"2024-03-01T10:00:00Z,{OPEN},1.5,0.25,0.75,{VOLUME},0" in csv.text
        klines = client.get("/binance/api/v3/klines", params={"symbol": "ZZ", "interval": "1m"})
        assert klines.json()[0][:2] == [1709287200000, "0.3"]  # Binance's 8 decimals
        symbol = client.get("/symbols/ZZ").json()
        assert symbol["timeframes"][0]["first"] == "2024-03-01T10:00:00Z"
