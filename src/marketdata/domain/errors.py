"""Errors the domain raises; entrypoints map them to responses, adapters translate into them."""


class DomainError(Exception):
    """Base of every error the service reports to a caller on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """Nothing stored matches the query (unknown ticker, timeframe or an empty range)."""


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
