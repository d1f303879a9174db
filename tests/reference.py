"""Bar semantics in plain Python, written apart from the service, to check it against:
sessions, day starts, buckets in local time, close times, gap fill, labels, forming bars.

A bucket starts at a local time (counted from its origin) and closes when the next starts.
A local time that happens twice is the later, standard-time one (as PostgreSQL reads
`timestamp AT TIME ZONE zone`); one that does not happen (clocks going forward) starts when
the gap ends, at the first instant whose local time is past it: an hour of local time that
the change cuts is shorter, and holds what is in it.
"""

import math
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from marketdata.domain.candles import Candle


def instant(local: datetime, zone: ZoneInfo) -> datetime:
    candidates = sorted({local.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})
    real = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == local]
    if len(real) == 2:
        return real[1]  # happens twice: the later
    if real:
        return real[0]
    # does not happen: the first whole minute whose local time is past it
    at = candidates[0]
    while (at - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None) >= local:
        at -= timedelta(minutes=1)
    while at.astimezone(zone).replace(tzinfo=None) < local:
        at += timedelta(minutes=1)
    return at


def local(ts: datetime, zone: ZoneInfo) -> datetime:
    return ts.astimezone(zone).replace(tzinfo=None)


def in_session(moment: time, session: tuple[time, time] | None) -> bool:
    if session is None:
        return True
    start, end = session
    return start <= moment < end if start < end else moment >= start or moment < end


class Spec:
    """What bars are asked for."""

    def __init__(
        self,
        tf_min: int,
        resampled: bool,
        tz: str = "UTC",
        day_start: time = time(0),
        session: tuple[time, time] | None = None,
        fill: str = "none",
        label: str | None = None,
    ) -> None:
        self.tf_min, self.resampled, self.zone = tf_min, resampled, ZoneInfo(tz)
        self.day_start, self.session, self.fill, self.label = day_start, session, fill, label
        self.stride = timedelta(minutes=tf_min)
        monday = tf_min % 10080 == 0
        self.origin = datetime(1970, 1, 5 if monday else 1, day_start.hour, day_start.minute)

    def start(self, ts: datetime) -> datetime:
        """The local time the bucket of `ts` starts at."""
        at = local(ts, self.zone)
        return self.origin + ((at - self.origin) // self.stride) * self.stride

    def bucket(self, ts: datetime) -> datetime:
        if not self.resampled:
            return ts
        return instant(self.start(ts), self.zone)

    def close(self, bucket: datetime) -> datetime:
        if not self.resampled:
            return bucket + self.stride
        return instant(self.start(bucket) + self.stride, self.zone)

    def last_close(self, bucket: datetime, source_tf: int) -> datetime:
        """When the last source candle the bucket can hold closes: its close, or the end of
        the last session before it when the session leaves the bucket's end out."""
        close = self.start(bucket) + self.stride
        if self.session is None or in_session(
            (close - timedelta(minutes=source_tf)).time(), self.session
        ):
            return instant(close, self.zone)
        ends = datetime.combine(close.date(), self.session[1])
        return instant(ends if ends <= close else ends - timedelta(days=1), self.zone)

    def after(self, bucket: datetime) -> datetime:
        """The next bucket's label, stepping in local time (stored: in UTC): the bucket of
        this one's close, back on the grid after a bucket that began in local time that
        does not exist (Lord Howe's 02:00 hour begins at 02:30; the next at 03:00)."""
        return self.bucket(self.close(bucket))

    def keeps(self, candle: Candle) -> bool:
        return in_session(local(candle.ts, self.zone).time(), self.session)

    def fills(self, bucket: datetime) -> bool:
        """Whether a missing bucket is filled: within the session's hours (intraday)."""
        if self.session is None or self.tf_min >= 1440:
            return True
        moment = self.start(bucket) if self.resampled else local(bucket, self.zone)
        if in_session(moment.time(), self.session):
            return True
        opens = datetime.combine(moment.date(), self.session[0])
        # the session may open in the bucket on its day or, past midnight, on the next
        return any(moment < at < moment + self.stride for at in (opens, opens + timedelta(days=1)))


def aggregate(spec: Spec, candles: list[Candle]) -> list[dict[str, Any]]:
    """Bars (bucket, OHLCV) of the candles kept by the session, in time order."""
    groups: dict[datetime, list[Candle]] = {}
    for candle in sorted((c for c in candles if spec.keeps(c)), key=lambda c: c.ts):
        groups.setdefault(spec.bucket(candle.ts), []).append(candle)
    return [
        {
            "ts": bucket,
            "open": group[0].open,
            "high": max(c.high for c in group),
            "low": min(c.low for c in group),
            "close": group[-1].close,
            "volume": sum(c.volume for c in group),
            "openint": group[-1].openint,
        }
        for bucket, group in sorted(groups.items())
    ]


def filled(spec: Spec, bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if spec.fill == "none" or not bars:
        return bars
    real = {bar["ts"]: bar for bar in bars}
    out: list[dict[str, Any]] = []
    at, last = bars[0]["ts"], bars[-1]["ts"]
    previous = bars[0]
    seen: set[datetime] = set()
    while at <= last:
        if at in real:
            previous = real[at]
            out.append({**real[at], "filled": False})
        elif at not in seen and spec.fills(at):
            price = previous["close"] if spec.fill == "prev" else math.nan
            out.append(
                {
                    "ts": at,
                    "open": price,
                    "high": price,
                    "low": price,
                    "close": price,
                    "volume": 0.0 if spec.fill == "prev" else math.nan,
                    "openint": previous["openint"] if spec.fill == "prev" else 0,
                    "filled": True,
                }
            )
        seen.add(at)
        at = spec.after(at)
    return out


def bars(spec: Spec, candles: list[Candle], ticker: str) -> list[dict[str, Any]]:
    """What /candles returns for `spec`, as JSON would carry it."""
    return [wire_bar(spec, ticker, bar) for bar in filled(spec, aggregate(spec, candles))]


def wire_bar(spec: Spec, ticker: str, bar: dict[str, Any]) -> dict[str, Any]:
    closes = spec.close(bar["ts"])
    out = {
        "ticker": ticker,
        "tf_min": spec.tf_min,
        "ts": _iso(closes if spec.label == "close" else bar["ts"]),
        **{k: _json(bar[k]) for k in ("open", "high", "low", "close", "volume")},
        "openint": bar["openint"],
    }
    if spec.label is not None:
        out["ts_close"] = _iso(closes)
    if bar.get("filled"):
        out["filled"] = True
    return out


def forming(spec: Spec, candles: list[Candle], ticker: str, source_tf: int) -> list[dict[str, Any]]:
    """The messages of a forming replay: a bar per source candle as it stands with it, and
    whether it is the bar's last update: a later candle is in another bucket, or the candle
    closes when the last one its bucket can hold does."""
    kept = sorted((c for c in candles if spec.keeps(c)), key=lambda c: c.ts)
    out = []
    for i, candle in enumerate(kept):
        bucket = spec.bucket(candle.ts)
        group = [c for c in kept[: i + 1] if spec.bucket(c.ts) == bucket]
        bar = aggregate(spec, group)[0]
        # a later candle in another bucket, and none later in this one (where clocks go
        # back, a bucket holds two runs of candles an hour apart)
        rest = [spec.bucket(c.ts) for c in kept[i + 1 :]]
        later = bool(rest) and bucket not in rest
        complete = candle.ts + timedelta(minutes=source_tf) >= spec.last_close(bucket, source_tf)
        out.append({"candle": wire_bar(spec, ticker, bar), "final": later or complete})
    return out


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value


def same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Equal bar for bar; volumes (sums of floats added in another order) to 1e-9."""
    if len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        if {k: v for k, v in a.items() if k != "volume"} != {
            k: v for k, v in b.items() if k != "volume"
        }:
            return False
        if (a["volume"] is None) != (b["volume"] is None):
            return False
        if a["volume"] is not None and not math.isclose(a["volume"], b["volume"], rel_tol=1e-9):
            return False
    return True


def first_difference(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if not same([a], [b]):
            return f"#{i}: got {a} expected {b}"
    return f"lengths {len(got)} and {len(expected)}"
