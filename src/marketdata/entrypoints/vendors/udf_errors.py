"""The UDF protocol's errors: `{"s": "error", "errmsg": ...}` on every status (the
datafeed parses any answer), for a query it cannot read (`decoded`), our domain's errors
and Litestar's own checks (`HANDLERS`, the router's exception handlers)."""

from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from marketdata.domain.errors import DomainError, NotFound, StoreUnavailable

log = structlog.get_logger(logger_name="marketdata.udf")


class UdfError(Exception):
    def __init__(self, errmsg: str, status: int = 400) -> None:
        super().__init__(errmsg)
        self.errmsg, self.status = errmsg, status


class ErrorBody(msgspec.Struct):
    errmsg: str
    s: str = "error"


def decoded(kind: type[msgspec.Struct], request: Request[Any, Any, Any]) -> Any:
    values = {k: v for k, v in request.query_params.items() if v != ""}
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as error:
        raise UdfError(f"invalid query: {error}") from None


def _answer(errmsg: str, status: int) -> Response[Any]:
    return Response(ErrorBody(errmsg), status_code=status, media_type=MediaType.JSON)


def _udf_error(request: Request[Any, Any, Any], error: UdfError) -> Response[Any]:
    return _answer(error.errmsg, error.status)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    if isinstance(error, StoreUnavailable):
        log.warning("database unavailable", reason=error.message, kind=error.kind)
        request.app.state.metrics.db_errors.labels(error.kind).inc()
        return _answer(error.message, 503)
    if isinstance(error, NotFound):
        return _answer(error.message, 404)
    return _answer(error.message, 400)


_NAMES = {"start": "from", "text": "query"}  # parameters whose name is Python's keyword


def _validation_error(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    items = error.extra if isinstance(error.extra, list) else []
    problems = [
        f"{_NAMES.get(str(item.get('key')), item.get('key'))}: {item.get('message')}"
        for item in items
        if isinstance(item, dict)
    ]
    return _answer("; ".join(problems) or str(error.detail), 400)


def _http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    return _answer(str(error.detail), error.status_code)


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("unhandled error", path=request.url.path)
    return _answer("internal error", 500)


HANDLERS: dict[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    UdfError: _udf_error,
    DomainError: _domain_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
