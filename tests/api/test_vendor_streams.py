"""What Alpaca's and Polygon's streams share (vendors/alpaca_polygon_live.py, BarStream):
each says it in its vendor's words, over the same connection rules."""

import json
from typing import Any

import pytest
from litestar.exceptions import WebSocketDisconnect

from tests.support import AppFactory

# path, an auth message, its vendor's answer to a message too large, to one it cannot read,
# and its last word to a client over the connection limit
VENDORS = {
    "alpaca": (
        "/alpaca/v2/iex",
        {"action": "auth", "key": "k", "secret": "s"},
        [{"T": "error", "msg": "invalid syntax: message too large", "code": 400}],
        [{"T": "error", "msg": "invalid syntax", "code": 400}],
        [{"T": "error", "msg": "connection limit exceeded", "code": 406}],
    ),
    "polygon": (
        "/polygon/stocks",
        {"action": "auth", "params": "k"},
        [{"status": "error", "message": "message too large", "ev": "status"}],
        None,  # Polygon names what it could not read: checked by its prefix below
        [{"status": "max_connections", "message": "connection limit exceeded", "ev": "status"}],
    ),
}


def received(ws: Any) -> list[dict[str, Any]]:
    frame: list[dict[str, Any]] = json.loads(ws.receive_text())
    return frame


@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.timeout(60)
def test_a_bad_message_is_answered_and_the_connection_goes_on(
    app_factory: AppFactory, vendor: str
) -> None:
    path, auth, too_large, unreadable, _ = VENDORS[vendor]
    with app_factory() as client, client.websocket_connect(path) as ws:
        received(ws)  # connected
        ws.send_text("x" * 65537)
        assert received(ws) == too_large
        ws.send_text("{not json")
        answer = received(ws)
        if unreadable is not None:
            assert answer == unreadable
        else:
            assert answer[0]["status"] == "error"
            assert answer[0]["message"].startswith("invalid message: ")
        ws.send_text(json.dumps(auth))  # still heard
        assert "authenticated" in json.dumps(received(ws))


@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.timeout(60)
def test_over_the_connection_limit_the_vendors_word_then_try_again_later(
    app_factory: AppFactory, vendor: str
) -> None:
    path, _, _, _, busy = VENDORS[vendor]
    with app_factory(ws_max_sessions=1) as client, client.websocket_connect(path) as first:
        received(first)  # connected: the one session there is room for
        with client.websocket_connect(path) as second:
            assert received(second) == busy
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_text()
            assert closed.value.code == 1013
        first.send_text(json.dumps(VENDORS[vendor][1]))  # the first one is untouched
        assert "authenticated" in json.dumps(received(first))
