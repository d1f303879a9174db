"""Errors the domain raises; entrypoints map them to responses, adapters translate into them."""

from datetime import datetime
from typing import Protocol


class DomainError(Exception):
    """Base of every error the service reports to a caller on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """Nothing stored matches the query (unknown ticker, timeframe or an empty range)."""


def no_candles(
    ticker: str,
    tf_min: int | str | None = None,
    time_range: "TimeRangeLike | None" = None,
    stored: tuple[int, ...] = (),
) -> NotFound:
    """The one message for nothing to answer with: a ticker (or several, comma-separated),
    its timeframe(s), the range asked for; with `stored`, why the timeframe cannot be made
    from what is stored."""
    message = f"No candles found for ticker {ticker!r}"
    if tf_min is not None:
        message += f" with tf_min={tf_min}"
    if time_range is not None:
        message += f" between {time_range.start.isoformat()} and {time_range.end.isoformat()}"
    if stored:
        held = ", ".join(map(str, stored))
        message += (
            f": it is not stored and cannot be built from the stored timeframes ({held});"
            " a resampled timeframe must be a multiple of one of them"
        )
    return NotFound(message)


class TimeRangeLike(Protocol):
    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


class InvalidQuery(DomainError):
    """The query makes no sense as a whole (start > end) or a datetime cannot be read."""


class InvalidParameter(DomainError):
    """One named parameter is missing, of the wrong type or out of its bounds."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.reason = message


class StoreUnavailable(DomainError):
    """The candle store cannot be reached or did not answer in time.

    Carries the server's host and port so operators can see where it tried; never credentials.
    """

    def __init__(self, host: str, port: str, reason: str, kind: str = "connection") -> None:
        super().__init__(f"database at {host}:{port} is unavailable: {reason}")
        self.host = host
        self.port = port
        self.reason = reason
        # connection | pool_timeout | statement_timeout | schema: for metrics and logs
        self.kind = kind


class TooSlow(DomainError):
    """A live client reads too slowly: more candles waited for it than its bound."""
