"""Time-travel sessions over REST: made, read, controlled and ended, the same seen through
every instance (the clock is data in the database, changes announced to all)."""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from litestar.exceptions import WebSocketDisconnect

from tests.factories import series
from tests.support import AppFactory, Client, insert

START = "2024-03-01T14:30:00Z"


def present(client: Client, sid: str) -> datetime:
    response = client.get(f"/sessions/{sid}")
    assert response.status_code == 200, response.text
    return datetime.fromisoformat(response.json()["present"])


def made(client: Client, **body: Any) -> dict[str, Any]:
    response = client.post("/sessions", json={"start": START, **body})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_session_s_present_moves_and_obeys_its_controls(client: Client) -> None:
    session = made(client, speed=3600, tickers=["AAPL", "MSFT"])
    sid = session["id"]
    assert session["state"] == "running"
    assert session["tickers"] == ["AAPL", "MSFT"]
    base = f"http://testserver.local/sessions/{sid}"
    assert session["urls"]["binance"] == f"{base}/binance/api/v3"
    assert session["urls"]["replay"] == f"ws://testserver.local/sessions/{sid}/ws/replay"
    first = present(client, sid)
    time.sleep(0.05)
    assert present(client, sid) > first  # an hour a second
    paused = client.post(f"/sessions/{sid}/pause").json()
    assert paused["state"] == "paused"
    held = datetime.fromisoformat(paused["present"])
    time.sleep(0.05)
    assert present(client, sid) == held
    sought = client.post(f"/sessions/{sid}/seek", json={"to": "2024-01-02T00:00:00Z"}).json()
    assert sought["present"] == "2024-01-02T00:00:00Z"
    assert sought["state"] == "paused"  # a seek keeps the pause
    client.post(f"/sessions/{sid}/speed", json={"step_seconds": 1, "tf_min": 60})
    resumed = client.post(f"/sessions/{sid}/resume").json()
    assert resumed["speed"] == 3600
    assert resumed["state"] == "running"
    assert client.delete(f"/sessions/{sid}").status_code == 204
    gone = client.get(f"/sessions/{sid}")
    assert gone.status_code == 404
    assert sid in gone.json()["error"]
    assert client.post(f"/sessions/{sid}/pause").status_code == 404


def test_a_session_ends_at_its_end(client: Client) -> None:
    session = made(client, speed=1_000_000, end="2024-03-01T15:00:00Z")
    time.sleep(0.01)
    read = client.get(f"/sessions/{session['id']}").json()
    assert read["state"] == "ended"
    assert read["present"] == "2024-03-01T15:00:00Z"


def test_bad_sessions_are_refused_naming_what_is_wrong(client: Client) -> None:
    for body, named in [
        ({}, "start"),
        ({"start": START}, "speed"),
        ({"start": START, "speed": 1, "step_seconds": 1}, "speed"),
        ({"start": START, "speed": -1}, "speed"),
        ({"start": START, "speed": 1, "end": "2024-01-01"}, "end"),
        ({"start": "soon", "speed": 1}, "start"),
        ({"start": START, "speed": 1, "tickers": ["ok", "b\x00d"]}, "ticker"),
        ({"start": START, "speed": 1, "colour": "red"}, "colour"),
    ]:
        response = client.post("/sessions", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert named in response.text, (body, response.text)
    assert client.post("/sessions/nope/seek", json={"to": "then"}).status_code in (400, 404)
    broken = client.post("/sessions", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400


def test_every_instance_sees_the_same_session_and_its_changes(app_factory: AppFactory) -> None:
    with app_factory() as one, app_factory() as two:
        sid = made(one, speed=60)["id"]
        assert abs(present(one, sid) - present(two, sid)) < timedelta(seconds=5)
        for _ in range(3):  # what `two` knew is forgotten as soon as `one` changes it
            paused = one.post(f"/sessions/{sid}/pause").json()
            assert present(two, sid) == datetime.fromisoformat(paused["present"])
            one.post(f"/sessions/{sid}/seek", json={"to": "2020-01-01T00:00:00Z"})
            assert present(two, sid) == datetime.fromisoformat("2020-01-01T00:00:00Z")
            one.post(f"/sessions/{sid}/resume")
            assert present(two, sid) > datetime.fromisoformat("2020-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("path", "hello", "follow", "said"),
    [
        (
            "polygon/stocks",
            {"action": "auth", "params": "key"},
            {"action": "subscribe", "params": "AM.AAPL"},
            lambda m: (m["status"], m["message"]),
        ),
        (
            "alpaca/v2/iex",
            {"action": "auth", "key": "k", "secret": "s"},
            {"action": "subscribe", "bars": ["AAPL"]},
            lambda m: (m["T"], m["msg"]),
        ),
    ],
)
def test_a_session_ended_ends_its_streams_saying_so(
    client: Client,
    db_url: str,
    path: str,
    hello: dict[str, Any],
    follow: dict[str, Any],
    said: Callable[[dict[str, Any]], tuple[str, str]],
) -> None:
    # Not as a slow client (Alpaca's 407, Polygon's "slow consumer"), and with 1000: the
    # stream is over (massive stops on it; on 1008 it reconnected for ever, refused).
    insert(db_url, series("AAPL", 5, tf_min=1, start=datetime(2024, 3, 1, 14, 30, tzinfo=UTC)))
    sid = made(client, speed=1)["id"]
    with client.websocket_connect(f"/sessions/{sid}/{path}") as ws:
        ws.receive_json()  # connected
        ws.send_json(hello)
        ws.receive_json()  # authenticated
        ws.send_json(follow)
        ws.receive_json()  # subscribed
        assert client.delete(f"/sessions/{sid}").status_code in (200, 204)
        last: list[dict[str, Any]] = ws.receive_json(timeout=10)
        kind, message = said(last[0])
        assert kind == "error"
        assert message.startswith("the session ended: no session")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json(timeout=10)
    assert closed.value.code == 1000


def test_polygon_s_next_url_stays_in_the_session(client: Client, db_url: str) -> None:
    # A client following next_url as given (the JS client, a browser) read bars from after
    # the present: it pointed under /polygon, outside the session. massive joins its base
    # URL and the URL's path: that too stays in the session.
    opens = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
    insert(db_url, series("AAPL", 60, tf_min=1, start=opens))
    sid = made(client, speed=1, start="2024-03-01T14:40:00Z")["id"]
    base = f"/sessions/{sid}/polygon"
    path = "/v2/aggs/ticker/AAPL/range/1/minute/2024-03-01/2024-03-01"
    first = client.get(f"{base}{path}", params={"limit": 4}).json()
    assert first["resultsCount"] == 4
    seen, follow = [], urlparse(first["next_url"])
    assert follow.path == f"{base}{path}"
    for url in (f"{follow.path}?{follow.query}", f"{base}{follow.path}?{follow.query}"):
        page = client.get(url.removeprefix("http://testserver.local"))
        assert page.status_code == 200, page.text
        seen.append([bar["t"] for bar in page.json()["results"]])
    assert seen[0] == seen[1]
    cut = int(datetime(2024, 3, 1, 14, 40, tzinfo=UTC).timestamp() * 1000)
    assert all(t + 60_000 <= cut for t in seen[0])  # nothing closes after the present
    elsewhere = client.get(f"{base}/sessions/other/polygon{path}?{follow.query}")
    assert elsewhere.status_code == 404


def test_a_session_that_is_not_is_each_protocol_s_own_404(client: Client) -> None:
    # as each answers a path it does not serve: Binance's code and msg, Alpaca's message,
    # Polygon's status ERROR, UDF's s/errmsg (the clients raise their typed errors on them)
    base = "/sessions/nope"
    answers = {
        "binance": client.get(f"{base}/binance/api/v3/time"),
        "alpaca": client.get(f"{base}/alpaca/v2/stocks/bars", params={"symbols": "AAPL"}),
        "polygon": client.get(f"{base}/polygon/v2/aggs/ticker/A/range/1/day/2024-01-01/2024-01-02"),
        "udf": client.get(f"{base}/udf/config"),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 404)
    assert answers["binance"].json()["code"] == -1000
    assert "no session 'nope'" in answers["binance"].json()["msg"]
    assert "no session 'nope'" in answers["alpaca"].json()["message"]
    assert answers["polygon"].json()["status"] in ("ERROR", "NOT_FOUND")
