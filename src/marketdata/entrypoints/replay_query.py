"""The replay's query string and STATUS messages: `WS /ws/replay?...` decoded into the
replay asked for, each value checked by the domain's value objects."""

import typing
from collections.abc import Mapping
from typing import Literal

import msgspec

from marketdata.domain.bar_options import bar_options
from marketdata.domain.candles import parse_timestamp
from marketdata.domain.errors import InvalidParameter
from marketdata.domain.replay import Pacing, ReplaySelection, ReplayStatus
from marketdata.entrypoints.schemas import ReplayQuery, StatusMessage
from marketdata.entrypoints.settings import Settings


class ReplayRequest(msgspec.Struct, frozen=True):
    selection: ReplaySelection
    pacing: Pacing
    lockstep: bool
    from_seq: int
    batch: int | None
    live: bool


_KINDS = {int: "a whole number", float: "a number", str: "text"}


def decode_query(params: Mapping[str, str]) -> ReplayQuery:
    """The query string into its Struct; a bad value raises InvalidParameter naming it."""
    values = {name: value for name, value in params.items() if value != ""}
    try:
        return msgspec.convert(values, ReplayQuery, strict=False)
    except msgspec.ValidationError as error:
        name = str(error).rpartition("$.")[2].rstrip("`")
        field = next((f for f in msgspec.structs.fields(ReplayQuery) if f.name == name), None)
        if field is None:  # pragma: no cover (every error names a field)
            raise InvalidParameter("query", str(error)) from None
        allowed = typing.get_args(field.type) if typing.get_origin(field.type) is Literal else ()
        if allowed:
            raise InvalidParameter(
                name, f"must be {' or '.join(allowed)}, got {values[name]!r}"
            ) from None
        kind = next((_KINDS[t] for t in typing.get_args(field.type) if t in _KINDS), "valid")
        raise InvalidParameter(name, f"{values[name]!r} is not {kind}") from None


def replay_request(query: ReplayQuery, settings: Settings) -> ReplayRequest:
    """The replay asked for, validated by the domain's value objects; raises DomainError
    naming the bad parameter."""
    if query.ticker and query.tickers:
        raise InvalidParameter("tickers", "give ticker or tickers, not both")
    raw = query.tickers or query.ticker or ""
    tickers = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    if not tickers:
        raise InvalidParameter("ticker", "is required")
    step = query.step_seconds
    if step is None and query.speed is None:
        step = settings.ws_default_step_seconds
    return ReplayRequest(
        selection=ReplaySelection(
            tickers,
            timeframes_of(query.tf_min) if query.tf_min else (settings.default_tf_min,),
            parse_timestamp(query.start, "start") if query.start else None,
            parse_timestamp(query.end, "end") if query.end else None,
            options=bar_options(query.tz, query.day_start, query.session, query.fill, query.label),
            forming=query.forming,
        ),
        pacing=Pacing(
            step_seconds=step,
            speed=query.speed,
            min_step=settings.ws_min_step_seconds,
            max_step=settings.ws_max_step_seconds,
        ),
        lockstep=query.mode == "lockstep",
        from_seq=query.from_seq or 0,
        batch=query.batch,
        live=query.live,
    )


def timeframes_of(text: str) -> tuple[int, ...]:
    """`5` or `5,60`: distinct timeframes, in the order given."""
    found: dict[int, None] = {}
    for part in text.split(","):
        if not part.strip().isdigit():
            raise InvalidParameter("tf_min", f"{part.strip()!r} is not a whole number of minutes")
        found[int(part)] = None
    return tuple(found)


def status_message(status: ReplayStatus) -> StatusMessage:
    """The seed's STATUS body: `ticker` holds every ticker, comma-separated; `tickers` the
    list, when there are several."""
    return StatusMessage(
        type="STATUS",
        message=status.message,
        ticker=",".join(status.tickers) or None,
        tf_min=status.tf_min,
        step_seconds=status.step_seconds,
        total_candles=status.total,
        tickers=list(status.tickers) if len(status.tickers) > 1 else None,
        tf_mins=list(status.tf_mins) if status.tf_mins else None,
        speed=status.speed,
        seq=status.seq,
        error=status.error,
    )


def refusal(params: Mapping[str, str], message: str, error: str) -> ReplayStatus:
    """A STATUS for a replay refused before it exists: it echoes what was asked."""
    raw = params.get("tickers") or params.get("ticker") or ""
    tf = params.get("tf_min")
    return ReplayStatus(
        message=message,
        tickers=tuple(t.strip() for t in raw.split(",") if t.strip()),
        tf_min=int(tf) if tf and tf.isdigit() else None,
        error=error,
    )
