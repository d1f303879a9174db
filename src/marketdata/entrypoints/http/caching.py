"""Conditional requests (RFC 9110) and answers kept in this process.

Every GET of candles, symbols and coverage carries a strong ETag made of the version of
the series its answer is made of (kept in the series catalog by every write; see
`CandleQueries.version`), with this build's and settings' token: `If-None-Match` with it
gets 304, decided before any candle is read (without a round trip when the process knows
the series, `adapters/postgres/known.py`). `Cache-Control` says how long a shared cache may
keep an answer: CACHE_MAX_AGE seconds, 0 (the default) for `no-cache` (keep it, but ask
again each time: the ETag makes that cheap).

JSON answers of candles are also kept here, under their URL and ETag, in at most
RESPONSE_CACHE_MB: the same question asked again while its series has not changed is
answered from memory."""

import functools
import hashlib
from collections import OrderedDict
from typing import Any

from litestar import Request, Response

import marketdata
from marketdata.entrypoints.settings import Settings


def token(settings: Settings) -> str:
    """What else an answer depends on: the build and the settings that shape answers."""
    return _token(marketdata.__version__, settings.default_tf_min, settings.max_limit)


@functools.lru_cache(maxsize=8)
def _token(*basis: object) -> str:  # once per process, not per request
    return hashlib.blake2b("/".join(map(str, basis)).encode(), digest_size=4).hexdigest()


def etag(settings: Settings, version: int | str) -> str:
    return f'"{version}.{token(settings)}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """`If-None-Match` against our tag, compared weakly as RFC 9110 asks for this header."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(c.strip().removeprefix("W/") == tag for c in if_none_match.split(","))


def headers(settings: Settings, tag: str) -> dict[str, str]:
    age = settings.cache_max_age
    return {
        "ETag": tag,
        "Cache-Control": f"public, max-age={age}" if age else "no-cache",
        "Vary": "Accept",  # (the compression adds Accept-Encoding where it applies)
    }


def not_modified(settings: Settings, tag: str) -> Response[Any]:
    return Response(b"", status_code=304, headers=headers(settings, tag))


def conditional(
    request: Request[Any, Any, Any], settings: Settings, version: int | str, output: str = "json"
) -> tuple[str, Response[Any] | None]:
    """The one ETag rule of every GET: the tag of an answer made of `version` in the
    representation `output` (each its own: JSON, CSV, NDJSON, Parquet, Arrow), and a 304
    when the client has it already."""
    tag = etag(settings, version if output == "json" else f"{version}.{output}")
    if matches(request.headers.get("if-none-match"), tag):
        return tag, not_modified(settings, tag)
    return tag, None


def answer(
    settings: Settings, tag: str, body: bytes, extra: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        body, media_type="application/json", headers={**headers(settings, tag), **(extra or {})}
    )


class Answers:
    """Encoded answers by URL, each with the ETag it was made under; the least recently
    used go first past the byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.size = 0
        self._kept: OrderedDict[str, tuple[str, bytes, dict[str, str]]] = OrderedDict()

    def get(self, url: str, tag: str) -> tuple[bytes, dict[str, str]] | None:
        """The body kept for this URL under this tag, and its own headers (a Link)."""
        kept = self._kept.get(url)
        if kept is None or kept[0] != tag:
            return None
        self._kept.move_to_end(url)
        return kept[1], kept[2]

    def keep(self, url: str, tag: str, body: bytes, extra: dict[str, str]) -> None:
        if len(body) > self.budget // 8:
            return  # one answer never takes most of the room (a budget of 0 keeps none)
        if (old := self._kept.pop(url, None)) is not None:
            self.size -= len(old[1])
        self._kept[url] = (tag, body, extra)
        self.size += len(body)
        while self.size > self.budget:
            _, (_, dropped, _) = self._kept.popitem(last=False)
            self.size -= len(dropped)
