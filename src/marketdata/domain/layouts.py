"""Reading candle files: the text layouts, their detection and row parsing, as pure
functions (each row checked by `ingest.check_candle`).

Three layouts are understood:
- Stooq/Finam text: a `<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,...` header; `<PER>` is minutes
  (1, 5, 15, 30, 60...) or D, W, M; `<DATE>` YYYYMMDD and `<TIME>` HHMMSS, the bar's open.
- CSV with a header: column names matched case-insensitively, with common aliases
  (`symbol` for `ticker`, `timestamp`/`datetime`/`date` for `ts`, ...); `ts` is ISO 8601 or
  epoch seconds/milliseconds/microseconds, or separate `date` and `time` columns.
- Binance kline dumps: no header, `open_time` in epoch ms (or µs), then open, high, low,
  close, volume; ticker and interval come from the file name (`BTCUSDT-1m-2022-08.csv`).

Naive times are in the source's time zone (an option, UTC by default). A row that cannot be
read raises BadRow naming file, line and field.
"""

import csv
import enum
import io
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo

from marketdata.domain.ingest import BadFile, BadRow, IngestOptions, Row, check_candle

RowParser = Callable[[Sequence[str], int], Row]

PERIODS = {"D": 1440, "W": 10080, "M": 43200}  # M: a 30-day month, by convention
_BINANCE_INTERVAL = {"m": 1, "h": 60, "d": 1440, "w": 10080}
_BINANCE_NAME = re.compile(r"^([A-Z0-9]+)-(\d+)([mhdw])-")

ALIASES = {
    "ticker": ("ticker", "symbol", "secid", "code", "instrument"),
    "tf_min": ("tf_min", "timeframe", "tf", "per", "period"),
    "ts": ("ts", "timestamp", "datetime", "date_time", "time_utc", "open_time", "date"),
    "time": ("time",),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "openint": ("openint", "oi", "open_interest"),
}


def _number(text: str, name: str, file: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRow(file, line, name, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRow(file, line, name, f"{text!r} is not a finite number")
    return value


def _integer(text: str, name: str, file: str, line: int) -> int:
    value = _number(text, name, file, line) if text else 0.0
    if value != int(value):
        raise BadRow(file, line, name, f"{text!r} is not a whole number")
    return int(value)


def _local(naive: datetime, tz: tzinfo) -> datetime:
    return naive.replace(tzinfo=tz) if tz is UTC else naive.replace(tzinfo=tz).astimezone(UTC)


def parse_time(text: str, tz: tzinfo, name: str, file: str, line: int) -> datetime:
    """ISO 8601 (naive means `tz`) or epoch seconds, milliseconds or microseconds."""
    value = text.strip()
    if value.isdigit() and len(value) >= 9:
        number = int(value)
        seconds = number / 1e6 if number >= 10**14 else number / 1e3 if number >= 10**11 else number
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadRow(file, line, name, f"{text!r} is out of range") from None
    try:
        parsed = datetime.fromisoformat(value)
        return _local(parsed, tz) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise BadRow(file, line, name, f"{text!r} is not a date and time") from None
    except OverflowError:
        raise BadRow(file, line, name, f"{text!r} is out of range") from None


def period_of(text: str, file: str, line: int) -> int:
    """A Stooq/Finam <PER>: minutes, or D, W, M."""
    if text in PERIODS:
        return PERIODS[text]
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise BadRow(file, line, "<PER>", f"{text!r} is not a period (minutes, D, W or M)")


def stooq_parser(header: Sequence[str], options: IngestOptions, file: str) -> RowParser:
    names = [h.strip().strip("<>").upper() for h in header]
    try:
        at = {name: names.index(name) for name in ("DATE", "OPEN", "HIGH", "LOW", "CLOSE")}
    except ValueError as missing:
        raise BadFile(f"{file}: Stooq/Finam header lacks a column ({missing})") from None
    i_ticker = names.index("TICKER") if "TICKER" in names else None
    i_per = names.index("PER") if "PER" in names else None
    i_time = names.index("TIME") if "TIME" in names else None
    i_vol = names.index("VOL") if "VOL" in names else None
    i_oi = names.index("OPENINT") if "OPENINT" in names else None
    i_date, i_open, i_high, i_low, i_close = (
        at["DATE"],
        at["OPEN"],
        at["HIGH"],
        at["LOW"],
        at["CLOSE"],
    )
    if options.ticker is None and i_ticker is None:
        raise BadFile(f"{file}: no <TICKER> column: give the ticker (--ticker)")
    if options.tf_min is None and i_per is None:
        raise BadFile(f"{file}: no <PER> column: give the timeframe (--tf-min)")
    tz = options.tz
    width = len(names)

    def parse(fields: Sequence[str], line: int) -> Row:
        if len(fields) != width:
            raise BadRow(file, line, "row", f"{len(fields)} fields, the header has {width}")
        ticker = options.ticker or fields[i_ticker]  # type: ignore[index]
        tf_min = options.tf_min or period_of(fields[i_per], file, line)  # type: ignore[index]
        d = fields[i_date]
        t = fields[i_time] if i_time is not None else "000000"
        try:
            naive = datetime(
                int(d[0:4]), int(d[4:6]), int(d[6:8]), int(t[0:2]), int(t[2:4]), int(t[4:6])
            )
        except ValueError:
            raise BadRow(
                file, line, "<DATE>/<TIME>", f"{d!r} {t!r} is not YYYYMMDD HHMMSS"
            ) from None
        return check_candle(
            (
                ticker,
                tf_min,
                _local(naive, tz),
                _number(fields[i_open], "<OPEN>", file, line),
                _number(fields[i_high], "<HIGH>", file, line),
                _number(fields[i_low], "<LOW>", file, line),
                _number(fields[i_close], "<CLOSE>", file, line),
                _number(fields[i_vol], "<VOL>", file, line) if i_vol is not None else 0.0,
                _integer(fields[i_oi], "<OPENINT>", file, line) if i_oi is not None else 0,
            ),
            file,
            line,
        )

    return parse


def columns_of(header: Sequence[str]) -> dict[str, int]:
    """Which column holds what, by name or alias, in any case (the first match wins); for
    text and columnar files alike."""
    names = [h.strip().lower() for h in header]
    at: dict[str, int] = {}
    for column, aliases in ALIASES.items():
        for alias in aliases:
            if alias in names and names.index(alias) not in at.values():
                at[column] = names.index(alias)
                break
    return at


def csv_parser(header: Sequence[str], options: IngestOptions, file: str) -> RowParser:
    names = [h.strip().lower() for h in header]
    at = columns_of(header)
    missing = [c for c in ("ts", "open", "high", "low", "close") if c not in at]
    if missing:
        raise BadFile(
            f"{file}: the header has no {', '.join(missing)} column (columns: {', '.join(header)})"
        )
    if options.ticker is None and "ticker" not in at:
        raise BadFile(f"{file}: no ticker column: give the ticker (--ticker)")
    if options.tf_min is None and "tf_min" not in at:
        raise BadFile(f"{file}: no tf_min column: give the timeframe in minutes (--tf-min)")
    tz = options.tz
    width = len(names)
    i_ts, i_open, i_high, i_low, i_close = at["ts"], at["open"], at["high"], at["low"], at["close"]
    i_time, i_vol, i_oi = at.get("time"), at.get("volume"), at.get("openint")
    i_ticker, i_tf = at.get("ticker"), at.get("tf_min")
    ts_name = header[i_ts].strip()

    def parse(fields: Sequence[str], line: int) -> Row:
        if len(fields) != width:
            raise BadRow(file, line, "row", f"{len(fields)} fields, the header has {width}")
        stamp = fields[i_ts] if i_time is None else f"{fields[i_ts]} {fields[i_time]}"
        tf_min = options.tf_min or _integer(fields[i_tf], "tf_min", file, line)  # type: ignore[index]
        return check_candle(
            (
                (options.ticker or fields[i_ticker]).strip(),  # type: ignore[index]
                tf_min,
                parse_time(stamp, tz, ts_name, file, line),
                _number(fields[i_open], "open", file, line),
                _number(fields[i_high], "high", file, line),
                _number(fields[i_low], "low", file, line),
                _number(fields[i_close], "close", file, line),
                _number(fields[i_vol], "volume", file, line) if i_vol is not None else 0.0,
                _integer(fields[i_oi], "openint", file, line) if i_oi is not None else 0,
            ),
            file,
            line,
        )

    return parse


def binance_options(options: IngestOptions, file: str, basename: str) -> IngestOptions:
    """A headerless kline file's ticker and interval: the options', or its Binance name's."""
    named = _BINANCE_NAME.match(basename)
    ticker = options.ticker or (named[1] if named else None)
    tf_min = options.tf_min or (int(named[2]) * _BINANCE_INTERVAL[named[3]] if named else None)
    if ticker is None or tf_min is None:
        raise BadFile(
            f"{file}: a headerless kline file needs --ticker and --tf-min"
            " (or a Binance name such as BTCUSDT-1m-2022-08.csv)"
        )
    return IngestOptions(tz=options.tz, ticker=ticker, tf_min=tf_min)


def binance_parser(options: IngestOptions, file: str, basename: str) -> RowParser:
    named = binance_options(options, file, basename)
    ticker, tf_min = named.ticker or "", named.tf_min or 0

    def parse(fields: Sequence[str], line: int) -> Row:
        if len(fields) < 6:
            raise BadRow(file, line, "row", f"{len(fields)} fields, a kline has at least 6")
        return check_candle(
            (
                ticker,
                tf_min,
                parse_time(fields[0], UTC, "open_time", file, line),
                _number(fields[1], "open", file, line),
                _number(fields[2], "high", file, line),
                _number(fields[3], "low", file, line),
                _number(fields[4], "close", file, line),
                _number(fields[5], "volume", file, line),
                0,
            ),
            file,
            line,
        )

    return parse


class Layout(enum.Enum):
    STOOQ = "stooq"  # <TICKER>,<PER>,...
    BINANCE = "binance"  # no header: klines
    CSV = "csv"  # a header of names


def layout_of(first: Sequence[str]) -> Layout:
    """The layout of a file whose first row is `first`."""
    if first and first[0].strip().startswith("<"):
        return Layout.STOOQ
    if first and all(_looks_numeric(f) for f in first[:6]) and len(first) >= 6:
        return Layout.BINANCE
    return Layout.CSV


def parser_for(
    first: Sequence[str], options: IngestOptions, file: str, basename: str
) -> tuple[RowParser, bool]:
    """The parser for a file whose first row is `first`; and whether that row is a header."""
    layout = layout_of(first)
    if layout is Layout.STOOQ:
        return stooq_parser(first, options, file), True
    if layout is Layout.BINANCE:
        return binance_parser(options, file, basename), False
    return csv_parser(first, options, file), True


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def rows_from_csv(text: str, options: IngestOptions, name: str) -> list[Row]:
    """CSV with a header (or Stooq/Finam text), as a file would be read; `name` names the
    text in messages ("body:3: close: ...")."""
    reader = csv.reader(io.StringIO(text, newline=""))
    first = next((fields for fields in reader if fields), None)
    if first is None:
        return []
    parse, is_header = parser_for(first, options, name, name)
    rows = [] if is_header else [parse(first, reader.line_num)]
    try:
        rows.extend(parse(fields, reader.line_num) for fields in reader if fields)
    except csv.Error as error:
        raise BadRow(name, reader.line_num, "row", str(error)) from None
    return rows
