"""How errors reach a client: the domain's and the framework's errors as HTTP responses,
and the domain's errors as WebSocket close codes, side by side so the two agree."""

import re
from typing import Any

import structlog
from litestar import Request, Response
from litestar.enums import MediaType
from litestar.exceptions import HTTPException, ValidationException

from marketdata.domain.errors import (
    DomainError,
    InvalidParameter,
    InvalidQuery,
    NotFound,
    StoreUnavailable,
)
from marketdata.domain.ingest import BadFile, BadRow
from marketdata.entrypoints.schemas import (
    ErrorBody,
    UnavailableBody,
    ValidationDetail,
    ValidationErrorBody,
)

log = structlog.get_logger(logger_name="marketdata")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012  # a vendor stream at shutdown: its clients retry (1001 ends massive's)
CLOSE_TRY_AGAIN = 1013


def close_code_of(error: DomainError) -> int:
    """The WebSocket close code for a domain error: the store failing is the server's
    fault (1011, as HTTP's 503), anything else the request's (1008, as HTTP's 4xx)."""
    return CLOSE_INTERNAL if isinstance(error, StoreUnavailable) else CLOSE_POLICY


_MISSING = re.compile(r"Missing required (\w+) parameter '([^']+)'")


def domain_error_response(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    if isinstance(error, StoreUnavailable):
        log.warning("database unavailable", reason=error.message, kind=error.kind)
        request.app.state.metrics.db_errors.labels(error.kind).inc()
        return Response(UnavailableBody(message=error.message), status_code=503)
    if isinstance(error, InvalidParameter):
        detail = [ValidationDetail(loc=["query", error.name], msg=error.reason)]
        return Response(ValidationErrorBody(error=error.message, detail=detail), status_code=422)
    if isinstance(error, BadRow):
        detail = [ValidationDetail(loc=["body", str(error.line), error.field], msg=error.reason)]
        return Response(ValidationErrorBody(error=error.message, detail=detail), status_code=422)
    if isinstance(error, BadFile):
        detail = [ValidationDetail(loc=["body"], msg=error.message)]
        return Response(ValidationErrorBody(error=error.message, detail=detail), status_code=422)
    status = 404 if isinstance(error, NotFound) else 400 if isinstance(error, InvalidQuery) else 500
    return Response(ErrorBody(error=error.message), status_code=status)


def validation_error_response(
    request: Request[Any, Any, Any], error: ValidationException
) -> Response[ValidationErrorBody]:
    """Litestar answers 400 for invalid parameters; the seed's contract says 422."""
    detail = [
        ValidationDetail(
            loc=[getattr(item.get("source"), "value", "query"), str(item.get("key") or "")],
            msg=str(item.get("message", "invalid value")).replace("`", "").replace(" | null", ""),
        )
        for item in (error.extra if isinstance(error.extra, list) else [])
        if isinstance(item, dict)
    ]
    if not detail and (missing := _MISSING.search(str(error.detail))):
        detail = [
            ValidationDetail(loc=[missing[1], missing[2]], msg="field required", type="missing")
        ]
    message = "; ".join(f"{d.loc[-1]}: {d.msg}" for d in detail) if detail else str(error.detail)
    return Response(ValidationErrorBody(error=message, detail=detail), status_code=422)


def http_error_response(
    request: Request[Any, Any, Any], error: HTTPException
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(error=str(error.detail)), status_code=error.status_code, headers=error.headers
    )


def internal_error_response(
    request: Request[Any, Any, Any], error: Exception
) -> Response[ErrorBody]:
    log.exception("unhandled error", path=request.url.path)
    return Response(ErrorBody(error="Internal Server Error"), status_code=500)


async def json_not_found(response: Response[Any]) -> Response[Any]:
    """The OpenAPI router mounted at "/" answers unknown paths with an HTML page; keep JSON."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        return Response(ErrorBody(error="Not Found"), status_code=404, media_type=MediaType.JSON)
    return response
