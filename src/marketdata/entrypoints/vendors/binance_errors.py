"""Binance's errors: `{"code": ..., "msg": ...}` with Binance's codes and texts, for what
its clients send wrong (the query string decoded here: `decoded`), for our domain's errors
and for Litestar's own checks (`HANDLERS`, the router's exception handlers)."""

import re
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from marketdata.domain.errors import DomainError, InvalidParameter, StoreUnavailable

log = structlog.get_logger(logger_name="marketdata.binance")


class BinanceError(Exception):
    """An answer in Binance's words: HTTP `status`, `{"code": code, "msg": msg}`."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def illegal(name: str, pattern: str = "^[0-9]{1,20}$") -> BinanceError:
    return BinanceError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '{pattern}'."
    )


def not_valid(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def invalid_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


_FIELD = re.compile(r"at `\$\.(\w+)`")
_MISSING = re.compile(r"missing required field `(\w+)`")


def decoded(kind: type[msgspec.Struct], request: Request[Any, Any, Any]) -> Any:
    """The query string as `kind`, or Binance's error for it: a parameter sent twice
    (-1101), missing (-1102), not a number (-1100) or out of bounds (-1130)."""
    values: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name in seen:
            raise BinanceError(-1101, f"Duplicate values for parameter '{name}'.")
        seen.add(name)
        if value != "":
            values[name] = value
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as error:
        text = str(error)
        if missing := _MISSING.search(text):
            raise mandatory(missing[1]) from None
        name = field[1] if (field := _FIELD.search(text)) else "query"
        if "Expected `int`, got" in text or name.endswith("Time"):
            raise illegal(name) from None
        raise not_valid(name) from None


def _answer(error: BinanceError) -> Response[Any]:
    return Response(
        {"code": error.code, "msg": error.msg},
        status_code=error.status,
        media_type="application/json",
    )


def _binance_error(request: Request[Any, Any, Any], error: BinanceError) -> Response[Any]:
    return _answer(error)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    if isinstance(error, StoreUnavailable):
        log.warning("database unavailable", reason=error.message, kind=error.kind)
        request.app.state.metrics.db_errors.labels(error.kind).inc()
        message = "Internal error; unable to process your request. Please try again."
        return _answer(BinanceError(-1001, message, 503))
    if isinstance(error, InvalidParameter):
        return _answer(not_valid(error.name))
    return _answer(BinanceError(-1000, error.message))


_LITESTAR_MISSING = re.compile(r"Missing required \w+ parameter '([^']+)'")


def _validation_error(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    """Litestar's own checks of the documented parameters, in Binance's words."""
    if missing := _LITESTAR_MISSING.search(str(error.detail)):
        return _answer(mandatory(missing[1]))
    items = error.extra if isinstance(error.extra, list) else []
    name = next((str(i.get("key")) for i in items if isinstance(i, dict) and i.get("key")), "")
    if not name:
        return _answer(BinanceError(-1100, str(error.detail)))
    head, *rest = name.split("_")  # the parameter's Python name (start_time: startTime)
    return _answer(illegal(head + "".join(part.title() for part in rest)))


def _http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    return _answer(BinanceError(-1000, str(error.detail), error.status_code))


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("unhandled error", path=request.url.path)
    return _answer(
        BinanceError(-1000, "An unknown error occurred while processing the request.", 500)
    )


HANDLERS: dict[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    BinanceError: _binance_error,
    DomainError: _domain_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
