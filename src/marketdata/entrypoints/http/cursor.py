"""The cursor of `/candles/range` pages: the last `ts` a page gave, opaque to clients."""

import base64
import binascii
from datetime import datetime

from marketdata.domain.candles import parse_timestamp
from marketdata.domain.errors import InvalidQuery


def encode_cursor(after: datetime) -> str:
    return base64.urlsafe_b64encode(f"v1|{after.isoformat()}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> datetime:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, stamp = text.partition("|")
        if version != "v1":
            raise ValueError(version)
        return parse_timestamp(stamp, "cursor")
    except (ValueError, InvalidQuery, binascii.Error):
        raise InvalidQuery("cursor: not a cursor this service gave out") from None
