"""Settings from the environment (and an optional `.env`), with the seed's names and defaults."""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from dotenv import dotenv_values

from marketdata.domain.errors import InvalidParameter
from marketdata.domain.timeframes import Rollup, rollup_of
from marketdata.entrypoints.vendors.common import named_pairs

Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "console"]

_URL_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every field is read from the environment variable of the same name in upper case."""

    database_url: str | None = None
    # Where the embedded PostgreSQL keeps its data when DATABASE_URL is unset
    # (default: $XDG_DATA_HOME/marketdata, i.e. ~/.local/share/marketdata).
    marketdata_home: str | None = None
    default_tf_min: Positive = 5
    max_limit: Positive = 5000
    ws_default_step_seconds: NonNegativeFloat = 15.0
    ws_min_step_seconds: NonNegativeFloat = 1.0
    ws_max_step_seconds: NonNegativeFloat = 60.0
    # Replay sessions one process serves at once; more are refused with close code 1013.
    ws_max_sessions: Positive = 1000
    # Candles read per page of a replay (two pages at most are in memory per session).
    ws_page_size: Positive = 100
    # A live client that does not keep up is cut (close 1008, a STATUS first), so that a
    # slow reader never holds the others back nor the server's memory: once the events
    # waiting for it pass LIVE_MAX_BYTES (about 256 bytes each), or when it took none for
    # LIVE_STALL_SECONDS while some waited. A client that keeps reading is never cut.
    live_max_bytes: Positive = 32 * 2**20
    live_stall_seconds: PositiveFloat = 10.0
    db_connect_timeout: PositiveFloat = 5.0
    db_command_timeout: PositiveFloat = 30.0
    db_pool_min_size: Positive = 2
    db_pool_max_size: Positive = 10
    # How long a request waits for a pool connection before it gets a 503;
    # unset means DB_CONNECT_TIMEOUT.
    db_pool_timeout: PositiveFloat | None = None
    # Streaming replicas of DATABASE_URL for candle reads, comma-separated URLs (none: every
    # read on the primary). A read uses one only once it has replayed what the read depends
    # on; one lagging more than REPLICA_MAX_LAG_SECONDS, or unreachable, is left out.
    database_replica_urls: str = ""
    replica_max_lag_seconds: PositiveFloat = 5.0
    # How long a read waits for a replica to replay what it needs before it reads the primary.
    replica_wait_ms: NonNegative = 0
    host: str = "127.0.0.1"
    port: Port = 8000
    # Server processes; each has its own pool of up to DB_POOL_MAX_SIZE connections.
    workers: Positive = 1
    # On SIGTERM/SIGINT, how long in-flight requests may take to finish before they are cut.
    shutdown_grace_seconds: NonNegativeFloat = 10.0
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"
    # Comma-separated list of origins allowed by CORS; "*" allows any (the seed's behaviour).
    cors_origins: str = "*"
    # Comma-separated keys accepted by POST /candles (Authorization: Bearer KEY); none
    # configured means writes are refused. Reads stay open.
    api_keys: str = ""
    # Largest request body accepted (POST /candles), in bytes; larger ones get 413.
    max_body_bytes: Positive = 10_000_000
    # HTTP caching: how long a shared cache may keep a GET's answer (0: `no-cache`, it asks
    # again, and the ETag answers 304 while nothing changed); answers kept in this process
    cache_max_age: NonNegative = 0
    response_cache_mb: NonNegative = 64
    # bodies of at least this many bytes are compressed when the client accepts it
    compression_min_bytes: Positive = 1000
    # Apply pending migrations in the background at start-up, as soon as the database
    # answers (`serve --no-migrate` turns it off); the service serves meanwhile.
    migrate_on_start: bool = True
    # Load the demo dataset after the migrations when `candles` is empty (`serve --demo`).
    demo_data: bool = False
    # Rollups kept at write time, comma-separated minutes, in UTC buckets; whole days or weeks
    # may name a zone (1440@America/New_York: its local days). Empty (or "off") keeps none.
    # Built for existing data by `marketdata migrate`, `marketdata rollups` and at start-up.
    rollup_tf_mins: str = "15,60,1440"
    # The vendor protocols' base and quote assets of tickers whose name does not say them
    # (BTCUSDT is BTC/USDT by itself): comma-separated TICKER=BASE/QUOTE, e.g. SBER=SBER/RUB.
    vendor_assets: str = ""

    def __repr__(self) -> str:
        # The URLs may carry a password: never let them reach a log line or a traceback.
        hidden = ("database_url", "database_replica_urls")
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f not in hidden}
        url = "None" if self.database_url is None else "'***'"
        replicas = "'***'" if self.database_replica_urls else "''"
        return (
            f"Settings(database_url={url}, database_replica_urls={replicas}, "
            + ", ".join(f"{k}={v!r}" for k, v in shown.items())
            + ")"
        )

    @property
    def replica_url_list(self) -> list[str]:
        return [url.strip() for url in self.database_replica_urls.split(",") if url.strip()]

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def rollups(self) -> tuple[Rollup, ...]:
        """ROLLUP_TF_MINS read (and checked when the settings are read)."""
        text = self.rollup_tf_mins.strip()
        if text.lower() in ("", "off", "none"):
            return ()
        return tuple(sorted({rollup_of(part) for part in text.split(",") if part.strip()}))

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


class SettingsError(Exception):
    """Raised once, naming every invalid variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings: " + "; ".join(problems))
        self.problems = problems


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Read settings: the process environment wins over `.env`, which wins over defaults."""
    import os

    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return settings_from(values)


def settings_from(values: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        name = field.name.upper()
        raw = values.get(name)
        if field.name == "rollup_tf_mins" and raw is not None:
            fields[field.name] = raw  # empty means none: checked below
            continue
        if raw is None or raw.strip() == "":
            continue
        if field.name == "database_url":
            if not raw.startswith(_URL_SCHEMES):
                # Never echo the value: it may hold a password.
                problems.append(f"{name}: must be a postgresql:// URL")
                continue
            fields[field.name] = _plain_url(raw)
            continue
        if field.name == "database_replica_urls":
            urls = [url.strip() for url in raw.split(",") if url.strip()]
            bad = [str(n) for n, url in enumerate(urls, 1) if not url.startswith(_URL_SCHEMES)]
            if bad:  # named by position: a URL may hold a password
                problems.append(
                    f"{name}: must be comma-separated postgresql:// URLs (item {', '.join(bad)}"
                    " is not)"
                )
                continue
            fields[field.name] = ",".join(_plain_url(url) for url in urls)
            continue
        if field.name == "log_level":
            raw = raw.upper()
        try:
            fields[field.name] = msgspec.convert(raw.strip(), field.type, strict=False)
        except msgspec.ValidationError as error:
            reason = str(error).removesuffix(" - at `$`").replace("`", "")
            problems.append(f"{name}: {raw!r} is invalid ({reason})")
    settings = Settings(**fields) if not problems else None
    if settings is not None:
        problems.extend(_cross_field_problems(settings))
    if problems:
        raise SettingsError(problems)
    assert settings is not None
    return settings


def _plain_url(url: str) -> str:
    """The seed's driver-qualified schemes, as libpq reads them."""
    return url.replace("+psycopg2://", "://").replace("+psycopg://", "://")


def _cross_field_problems(s: Settings) -> list[str]:
    problems = []
    if not s.ws_min_step_seconds <= s.ws_max_step_seconds:
        problems.append("WS_MIN_STEP_SECONDS: must not exceed WS_MAX_STEP_SECONDS")
    elif not s.ws_min_step_seconds <= s.ws_default_step_seconds <= s.ws_max_step_seconds:
        problems.append(
            "WS_DEFAULT_STEP_SECONDS: must lie between WS_MIN_STEP_SECONDS and WS_MAX_STEP_SECONDS"
        )
    if s.db_pool_min_size > s.db_pool_max_size:
        problems.append("DB_POOL_MIN_SIZE: must not exceed DB_POOL_MAX_SIZE")
    if s.replica_url_list and s.database_url is None:
        problems.append(
            "DATABASE_REPLICA_URLS: needs DATABASE_URL, the primary (the embedded server has"
            " no replicas)"
        )
    try:
        s.rollups  # noqa: B018 (read to check)
    except InvalidParameter as error:
        problems.append(
            f"ROLLUP_TF_MINS: {error.reason} (comma-separated minutes above 1, whole days may"
            " name a zone: 15,60,1440,1440@America/New_York; empty for none)"
        )
    try:
        named_pairs(s.vendor_assets)
    except ValueError as error:
        problems.append(f"VENDOR_ASSETS: {error}")
    return problems
