"""A path or a method no route serves, under a vendor's prefix (a time-travel session's
too), is answered in that vendor's error body: its clients turn it into their own typed
error (python-binance reads `code` and `msg`, binance-connector fails on a body without
`code`, alpaca-trade-api raises its APIError only with a `message`)."""

from typing import Any

import pytest

from tests.support import Client

VENDORS: list[tuple[str, str, Any]] = [
    ("/binance", "/api/v3/ticker/price?symbol=ACME", lambda b: {"code", "msg"} <= b.keys()),
    ("/alpaca", "/v2/stocks/ACME/bars/latest", lambda b: b["code"] // 100_000 in (404, 405)),
    ("/polygon", "/v3/reference/tickers", lambda b: b["status"] in ("ERROR", "NOT_FOUND")),
    ("/udf", "/quotes?symbols=ACME", lambda b: b["s"] == "error" and b["errmsg"]),
]


@pytest.mark.parametrize("session", ["", "/sessions/5c0f0000000000000000000000000000"])
@pytest.mark.parametrize(("prefix", "path", "shaped"), VENDORS)
def test_unserved_paths_and_methods_get_the_vendors_errors(
    client: Client, session: str, prefix: str, path: str, shaped: Any
) -> None:
    unknown = client.get(f"{session}{prefix}{path}")
    assert unknown.status_code == 404, unknown.text
    assert shaped(unknown.json()), unknown.text
    assert unknown.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "shaped"),
    [
        ("/binance/api/v3/klines", lambda b: b["code"] == -1000 and b["msg"]),
        ("/alpaca/v2/stocks/bars", lambda b: b["code"] == 40510000 and b["message"]),
        ("/udf/config", lambda b: b["s"] == "error" and b["errmsg"]),
    ],
)
def test_a_method_not_served_is_the_vendors_405(client: Client, path: str, shaped: Any) -> None:
    wrong = client.post(path, content=b"{}")
    assert wrong.status_code == 405, wrong.text
    assert shaped(wrong.json()), wrong.text


def test_our_own_unknown_paths_keep_our_shape(client: Client) -> None:
    assert client.get("/nothing/here").json() == {"error": "Not Found"}
