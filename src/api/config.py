"""Every setting of the service, parsed and validated once. This module is the only reader of
the environment (and .env).

`load_settings()` turns each variable into a typed value or raises `SettingsError` naming the
variable and the reason; `create_app` calls it, so a bad value stops the service before it
serves anything, with one line such as

    invalid setting EVENTS_RETENTION: must be 'off' or a duration such as '90 days' (got '100 yrs')

Durations and networks are parsed here into values (`Duration`, `TrustedProxies`) that the rest
of the code uses as they are, so no request ever meets an unparsed setting.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypedDict, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from decouple import UndefinedValueError, config

# The checkout: the default export folder lives in it (git-ignored), so a two-command start
# exports with no S3.
CHECKOUT = Path(__file__).resolve().parents[2]
LOCAL_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5433/analytics"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Environment = Literal["development", "test", "staging", "production"]
SiteAuthorization = Literal["off", "registry", "remote"]
PrivacyLevel = Literal["standard", "hashed", "strict"]
PRIVACY_LEVELS: tuple[PrivacyLevel, ...] = ("standard", "hashed", "strict")


class SettingsError(ValueError):
    """A setting that cannot be used: its variable and why."""

    def __init__(self, variable: str, reason: str, value: str | None = None) -> None:
        shown = f" (got {value!r})" if value is not None else ""
        super().__init__(f"invalid setting {variable}: {reason}{shown}")
        self.variable = variable


# --- durations -----------------------------------------------------------------------------

DURATION_UNITS: dict[str, tuple[str, int]] = {}  # unit name -> (canonical name, seconds; 0: calendar)
for _names, _unit, _seconds in (
    (("s", "sec", "secs", "second", "seconds"), "seconds", 1),
    (("m", "min", "mins", "minute", "minutes"), "minutes", 60),
    (("h", "hr", "hrs", "hour", "hours"), "hours", 3600),
    (("d", "day", "days"), "days", 86400),
    (("w", "week", "weeks"), "weeks", 7 * 86400),
    (("mon", "mons", "month", "months"), "months", 0),
    (("y", "yr", "yrs", "year", "years"), "years", 0),
):
    for _name in _names:
        DURATION_UNITS[_name] = (_unit, _seconds)
_PART = re.compile(r"\s*(\d{1,6})\s*([a-z]+)\s*")


@dataclass(frozen=True)
class Duration:
    """A period of whole months plus fixed seconds, as PostgreSQL's interval keeps them."""

    months: int
    seconds: int

    @property
    def sql(self) -> str:
        """Canonical interval text, bound as a parameter and cast to interval in SQL."""
        parts = []
        if self.months:
            parts.append(f"{self.months} months")
        if self.seconds or not parts:
            parts.append(f"{self.seconds} seconds")
        return " ".join(parts)

    def before(self, moment: datetime) -> datetime:
        """`moment` minus this duration, months by the calendar (as PostgreSQL subtracts)."""
        shifted = moment
        if self.months:
            month0 = moment.year * 12 + moment.month - 1 - self.months
            year, month = divmod(month0, 12)
            if year < 1:
                return datetime.min.replace(tzinfo=moment.tzinfo)
            day = min(moment.day, _days_in_month(year, month + 1))
            shifted = moment.replace(year=year, month=month + 1, day=day)
        return shifted - timedelta(seconds=self.seconds)

    def approx(self) -> timedelta:
        """At least as long as the duration ever is (a month counted as 31 days)."""
        return timedelta(days=31 * self.months, seconds=self.seconds)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def parse_duration(text: str) -> Duration:
    """'3 months', '90 days 12 hours', '1d', '30 min'. Raises ValueError with the reason."""
    lowered = text.strip().lower()
    if not lowered:
        raise ValueError("must be a duration such as '90 days' or '1 hour'")
    months = seconds = 0
    position = 0
    while position < len(lowered):
        match = _PART.match(lowered, position)
        unit = DURATION_UNITS.get(match.group(2)) if match else None
        if match is None or unit is None:
            raise ValueError("must be counts and units such as '90 days', '12 hours' or '3 months'")
        count = int(match.group(1))
        name, unit_seconds = unit
        if name == "years":
            months += 12 * count
        elif name == "months":
            months += count
        else:
            seconds += count * unit_seconds
        position = match.end()
    if months == 0 and seconds == 0:
        raise ValueError("must be longer than zero")
    return Duration(months=months, seconds=seconds)


# --- trusted proxies -----------------------------------------------------------------------

# Loopback and private networks: where Docker's bridge, Railway's edge and a local nginx
# connect from. A forwarded header from anywhere else is the client's own claim.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


@dataclass(frozen=True)
class TrustedProxies:
    """Peers whose X-Forwarded-For / X-Real-IP (and body `ip_address`) are believed."""

    trust_all: bool
    networks: tuple[Network, ...]

    def trusts(self, peer: str | None) -> bool:
        if self.trust_all:
            return True
        if peer is None or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def parse_trusted_proxies(text: str) -> TrustedProxies:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["*"]:
        return TrustedProxies(trust_all=True, networks=())
    if items in ([], ["none"]):
        return TrustedProxies(trust_all=False, networks=())
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or CIDR network ('*' trusts every peer, 'none' none)"
            ) from None
    return TrustedProxies(trust_all=False, networks=tuple(networks))


# --- the queue ----------------------------------------------------------------------------

QueueMode = Literal["none", "nats", "redis"]


@dataclass(frozen=True)
class QueueSettings:
    """INGEST_QUEUE and its broker's settings (src/api/queue/, docs/queue.md)."""

    mode: QueueMode = "none"
    nats_servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL, shared with the rate limits
    redis_allow_volatile: bool = False
    stream: str = "events"  # the JetStream stream's / Redis key's base name
    max_deliver: int = 5  # deliveries of a message the database refuses, then the DLQ
    retry_base: float = 1.0  # seconds before the first redelivery; doubled each time
    retry_max: float = 60.0
    ack_wait: float = 30.0  # seconds before a silent worker's messages go to another
    publish_timeout: float = 5.0  # seconds the API waits for the broker's acknowledgement
    fetch_batch: int = 5000  # messages a worker takes at once
    duplicate_window: float = 600.0  # seconds JetStream remembers a Nats-Msg-Id
    replicas: int = 1  # copies JetStream keeps of each stream (3 or 5 in a cluster)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def backoff(self, deliveries: int) -> float:
        """Seconds before redelivery after the `deliveries`-th attempt failed."""
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, deliveries - 1)))


_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _stream_name(text: str) -> str:
    if not _STREAM_NAME.match(text.strip()):
        raise ValueError("must be 1 to 64 letters, digits, '_' or '-'")
    return text.strip()


def _nats_servers(text: str) -> tuple[str, ...]:
    servers = tuple(item.strip() for item in text.split(",") if item.strip())
    if not servers:
        raise ValueError("must be one or more comma-separated nats:// URLs")
    for server in servers:
        parts = urlsplit(server)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            # Never echo the value: a URL may carry a token or password.
            raise ValueError("must be comma-separated nats:// (or tls://) URLs such as nats://127.0.0.1:4222")
    return servers


def _secret_url(variable: str, default: str, parse: Callable[[str], T]) -> T:
    """Like _read, but the value (it may hold a password) is never echoed."""
    _, value = _raw((variable,), default)
    try:
        return parse(value)
    except ValueError as exc:
        raise SettingsError(variable, str(exc)) from None


def _stats_database_url() -> str | None:
    _, value = _raw(("STATS_DATABASE_URL",), "")
    if not value.strip():
        return None
    return _postgres_url(value.strip(), "STATS_DATABASE_URL")


def load_queue_settings(redis_url: str | None) -> QueueSettings:
    """`redis_url`: REDIS_URL, parsed with the other Redis user's settings (rate limits)."""
    retry_base = _read("QUEUE_RETRY_BASE", "1", _number(float, 0.01, 3600))
    return QueueSettings(
        mode=cast(QueueMode, _read("INGEST_QUEUE", "none", _choice("none", "nats", "redis"))),
        nats_servers=_secret_url("NATS_URL", "nats://127.0.0.1:4222", _nats_servers),
        redis_url=redis_url or "redis://127.0.0.1:6379/0",
        redis_allow_volatile=_read("REDIS_ALLOW_VOLATILE", "false", _boolean),
        stream=_read("QUEUE_STREAM", "events", _stream_name),
        max_deliver=_read("QUEUE_MAX_DELIVER", "5", _number(int, 1, 1000)),
        retry_base=retry_base,
        retry_max=_read("QUEUE_RETRY_MAX", "60", _number(float, retry_base, 86400)),
        ack_wait=_read("QUEUE_ACK_WAIT", "30", _number(float, 1, 3600)),
        publish_timeout=_read("QUEUE_PUBLISH_TIMEOUT", "5", _number(float, 0.1, 600)),
        fetch_batch=_read("QUEUE_FETCH_BATCH", "5000", _number(int, 1, 100_000)),
        duplicate_window=_read("QUEUE_DUPLICATE_WINDOW", "600", _number(float, 1, 7 * 86400)),
        replicas=_read("QUEUE_REPLICAS", "1", _number(int, 1, 5)),
    )


# --- export destinations -------------------------------------------------------------------

ExportFormat = Literal["jsonl", "parquet"]


@dataclass(frozen=True)
class ExportTarget:
    """Where one kind of export goes: `s3://bucket/prefix` or `file:///path`, with its
    credentials (never in a repr, a log line or an answer: `masked()` shows them)."""

    url: str
    scheme: Literal["s3", "file"]
    bucket: str  # s3: the bucket; file: empty
    prefix: str  # s3: the key prefix, no leading or trailing slash; file: the folder
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    def masked(self) -> dict[str, str | None]:
        return {
            "url": self.url,
            "access_key": _mask(self.access_key),
            "secret_key": _mask(self.secret_key),
        }


def _mask(secret: str) -> str | None:
    """A secret as shown to operators: its last four characters when it is long enough that
    they say nothing useful about the rest, else only that it is set."""
    if not secret:
        return None
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


@dataclass(frozen=True)
class ExportSettings:
    raw: ExportTarget
    processed: ExportTarget
    s3_endpoint_url: str | None
    s3_region: str
    format: ExportFormat
    gzip: bool
    batch_size: int  # rows per file at most
    interval: float  # seconds between scheduled runs; 0: none
    lag: float  # seconds the watermark stays behind now
    late_window: float  # seconds an event's received_at may precede its transaction's start


def _export_target(variables: tuple[str, str, str, str], default_prefix: str) -> ExportTarget:
    """One destination from its URL, bucket, access key and secret key variables."""
    url_variable, bucket_variable, access_variable, secret_variable = variables
    bucket_setting = _read(bucket_variable, "", str.strip)
    access_key = _read(access_variable, "", str.strip)
    secret_key = _read(secret_variable, "", str.strip)
    if bool(access_key) != bool(secret_key):
        raise SettingsError(
            secret_variable if access_key else access_variable,
            "the access key and the secret key are set together or not at all",
        )
    default = (
        f"s3://{bucket_setting}/{default_prefix}"
        if bucket_setting
        else (CHECKOUT / "exports" / default_prefix).as_uri()
    )
    url = _read(url_variable, default, str.strip)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise SettingsError(url_variable, "must be s3://bucket/prefix or file:///path", url)
        if bucket_setting and bucket_setting != parts.netloc:
            raise SettingsError(bucket_variable, f"names another bucket than {url_variable}", bucket_setting)
        prefix = parts.path.strip("/")
        return ExportTarget(url, "s3", parts.netloc, prefix, access_key, secret_key)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise SettingsError(url_variable, "a file:// URL needs an absolute path (file:///path)", url)
        return ExportTarget(url, "file", "", unquote(parts.path).rstrip("/") or "/")
    raise SettingsError(url_variable, "must be s3://bucket/prefix or file:///path", url)


def _endpoint(text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:9000")
    return value


def load_export_settings() -> ExportSettings:
    return ExportSettings(
        raw=_export_target(
            ("RAW_EXPORT_URL", "RAW_S3_BUCKET", "RAW_S3_ACCESS_KEY", "RAW_S3_SECRET_KEY"), "raw-events"
        ),
        processed=_export_target(
            (
                "PROCESSED_EXPORT_URL",
                "PROCESSED_S3_BUCKET",
                "PROCESSED_S3_ACCESS_KEY",
                "PROCESSED_S3_SECRET_KEY",
            ),
            "processed-events",
        ),
        s3_endpoint_url=_read("S3_ENDPOINT_URL", "", _endpoint),
        s3_region=_read("S3_REGION", "us-east-1", str.strip) or "us-east-1",
        format=cast(ExportFormat, _read("EXPORT_FORMAT", "jsonl", _choice("jsonl", "parquet"))),
        gzip=_read("EXPORT_GZIP", "false", _boolean),
        batch_size=_read("EXPORT_BATCH_SIZE", "10000", _number(int, 1, 10_000_000)),
        interval=_read("EXPORT_INTERVAL", "60", _number(float, 0)),
        lag=_read("EXPORT_LAG", "5", _number(float, 0, 3600)),
        late_window=_read("EXPORT_LATE_WINDOW", "120", _number(float, 0, 86400)),
    )


# --- the settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    database_url: str
    environment: Environment
    db_timezone: str
    db_pool_size: int
    db_max_overflow: int
    db_startup_timeout: float
    host: str
    port: int
    cors_origins: tuple[str, ...]
    events_chunk_interval: str  # canonical interval text
    events_retention: Duration | None  # None: keep events forever
    retention_check_interval: float
    rollup_job_interval: float
    rollup_fold_interval: float
    rollup_fold_max_delay: float
    session_timeout: timedelta
    session_job_interval: float
    batch_max_events: int
    max_body_bytes: int
    body_read_timeout: float
    header_read_timeout: float
    ingest_memory_bytes: int
    ingest_queue_max_events: int
    ingest_flush_max_events: int
    ingest_flush_interval: float
    ingest_writers: int
    api_keys: tuple[str, ...]
    trusted_proxies: TrustedProxies
    log_level: str
    log_format: Literal["text", "json"]
    prometheus_multiproc_dir: str | None  # set: metrics are shared by gunicorn's workers
    docs_enabled: bool
    stats_statement_timeout: float
    exports: ExportSettings
    # Sites and keys (docs/sites.md). The defaults keep the service open and keyless.
    site_authorization: SiteAuthorization = "off"
    pixel_management_url: str | None = None  # required by SITE_AUTHORIZATION=remote
    pixel_management_timeout: float = 2.0
    site_cache_seconds: float = 60.0
    default_privacy_level: PrivacyLevel = "standard"
    secret_key: str | None = None  # HMAC key of stored API keys; needed to create or use them
    admin_api_key: str | None = None
    redis_url: str | None = None  # rate-limit counters; the database keeps them otherwise
    stats_database_url: str | None = None  # None: stats read DATABASE_URL
    queue: QueueSettings = field(default_factory=QueueSettings)  # INGEST_QUEUE=none

    def retention_start(self, now: datetime) -> datetime | None:
        """The oldest event time the retention keeps at `now` (None: all are kept). Ingest
        refuses older events: retention would drop them, and reads would never see them."""
        return self.events_retention.before(now) if self.events_retention else None

    def stored_since(self, now: datetime) -> datetime:
        """The oldest time that may still hold events: the retention start with a day of slack
        (chunks are dropped whole), or 1970. Bounds reads that have no range of their own."""
        start = self.retention_start(now)
        return max(start - timedelta(days=1), EPOCH) if start else EPOCH


def _raw(names: tuple[str, ...], default: str) -> tuple[str, str]:
    """The first of `names` that is set (the canonical one first, then older systems' names)."""
    for name in names:
        try:
            value: str = config(name)
        except UndefinedValueError:
            continue
        return name, value
    return names[0], default


def _read(names: str | tuple[str, ...], default: str, parse: Callable[[str], T]) -> T:
    variable, value = _raw((names,) if isinstance(names, str) else names, default)
    try:
        return parse(value)
    except (ValueError, ArithmeticError) as exc:
        raise SettingsError(variable, str(exc), value) from None


def _number(cast: Callable[[str], T], low: float, high: float | None = None) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            value = cast(text.strip())
        except ValueError:
            raise ValueError(f"must be a{'n integer' if cast is int else ' number'}") from None
        if not low <= value <= (high if high is not None else float("inf")):  # type: ignore[operator]
            bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValueError(f"must be {bound}")
        return value

    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _log_level(text: str) -> str:
    return _choice("debug", "info", "warning", "error", "critical")(text).upper()


def _zone(text: str) -> str:
    try:
        ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
    return text.strip()


def _retention(text: str) -> Duration | None:
    if text.strip().lower() in ("off", "none", "forever"):
        return None
    try:
        duration = parse_duration(text)
    except ValueError:
        raise ValueError("must be 'off' or a duration such as '90 days' or '3 months'") from None
    if duration.approx() < timedelta(days=1):
        raise ValueError("must be at least 1 day")
    if duration.months + duration.seconds / (30.436875 * 86400) > 100 * 12:
        raise ValueError("must be at most 100 years ('off' keeps events forever)")
    return duration


def _session_timeout(text: str) -> timedelta:
    duration = parse_duration(text)
    if duration.months:
        raise ValueError("must be a fixed duration such as '30 minutes', not months or years")
    if not 60 <= duration.seconds <= 86400:
        raise ValueError("must be between 1 minute and 1 day")
    return timedelta(seconds=duration.seconds)


def _chunk_interval(text: str) -> str:
    duration = parse_duration(text)
    if duration.months:
        raise ValueError("must be a fixed duration (hours, days or weeks), not months or years")
    if not 60 <= duration.seconds <= 366 * 86400:
        raise ValueError("must be between 1 minute and 366 days")
    return duration.sql


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(item.strip() for item in text.split(",") if item.strip())
    if not origins:
        raise ValueError("must be '*' or a comma-separated list of origins such as https://example.com")
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{origin!r} is not an origin such as https://example.com")
    return origins


def _directory(text: str) -> str | None:
    if not text.strip():
        return None
    path = Path(text.strip())
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ValueError("must be an existing directory this process can write")
    return str(path)


def _keys(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _http_url(text: str) -> str | None:
    value = text.strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL such as https://pixels.example.com")
    return value


def _secret(minimum: int) -> Callable[[str], str | None]:
    def parse(text: str) -> str | None:
        value = text.strip()
        if not value:
            return None
        if len(value) < minimum:
            # Never echo a secret: the caller's SettingsError shows no value for these.
            raise ValueError(f"must be at least {minimum} characters")
        return value

    return parse


def _redis_url(text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def _read_secret(name: str, minimum: int) -> str | None:
    _, value = _raw((name,), "")
    try:
        return _secret(minimum)(value)
    except ValueError as exc:
        raise SettingsError(name, str(exc)) from None


class _SiteSettings(TypedDict):
    site_authorization: SiteAuthorization
    pixel_management_url: str | None
    pixel_management_timeout: float
    site_cache_seconds: float
    default_privacy_level: PrivacyLevel
    secret_key: str | None
    admin_api_key: str | None
    redis_url: str | None


def _site_settings() -> _SiteSettings:
    mode = cast(SiteAuthorization, _read("SITE_AUTHORIZATION", "off", _choice("off", "registry", "remote")))
    url = _read("PIXEL_MANAGEMENT_URL", "", _http_url)
    if mode == "remote" and url is None:
        raise SettingsError("PIXEL_MANAGEMENT_URL", "must be set when SITE_AUTHORIZATION is remote")
    redis_url = _raw(("REDIS_URL",), "")[1]
    try:
        parsed_redis = _redis_url(redis_url)
    except ValueError as exc:
        raise SettingsError("REDIS_URL", str(exc)) from None  # the URL may hold a password
    return _SiteSettings(
        **{
            "site_authorization": mode,
            "pixel_management_url": url,
            "pixel_management_timeout": _read("PIXEL_MANAGEMENT_TIMEOUT", "2", _number(float, 0.05, 60)),
            "site_cache_seconds": _read("SITE_CACHE_SECONDS", "60", _number(float, 0, 86400)),
            "default_privacy_level": cast(
                PrivacyLevel, _read("DEFAULT_PRIVACY_LEVEL", "standard", _choice(*PRIVACY_LEVELS))
            ),
            "secret_key": _read_secret("SECRET_KEY", 32),
            "admin_api_key": _read_secret("ADMIN_API_KEY", 16),
            "redis_url": parsed_redis,
        }
    )


def _database_url() -> str:
    url: str = config("DATABASE_URL", default="")
    if not url:
        host: str = config("POSTGRES_HOST", default="")
        if not host:
            return LOCAL_DATABASE_URL
        user = quote(config("POSTGRES_USER", default="postgres"), safe="")
        password = quote(config("POSTGRES_PASSWORD", default=""), safe="")
        port = _read("POSTGRES_PORT", "5432", _number(int, 1, 65535))
        name: str = config("POSTGRES_DB", default="postgres")
        auth = f"{user}:{password}" if password else user
        url = f"postgresql+psycopg://{auth}@{host}:{port}/{name}"
    return _postgres_url(url, "DATABASE_URL")


def _postgres_url(url: str, variable: str) -> str:
    # Hosting platforms hand out postgres:// URLs; we always speak psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg://"):
        # Never echo the URL: it may hold a password.
        raise SettingsError(variable, "must be a postgresql:// (or postgres://) URL")
    return url


def load_settings() -> Settings:
    """Read and validate every setting; raises SettingsError for the first bad one."""
    pool_size = _read(("DB_POOL_SIZE", "DATABASE_POOL_SIZE"), "10", _number(int, 1, 1000))
    max_body = _read("MAX_BODY_BYTES", str(5 * 1024 * 1024), _number(int, 1024, 1 << 31))
    environment = cast(
        Environment,
        _read("ENVIRONMENT", "development", _choice("development", "test", "staging", "production")),
    )
    site = _site_settings()
    return Settings(
        database_url=_database_url(),
        environment=environment,
        db_timezone=_read("DB_TIMEZONE", "UTC", _zone),
        db_pool_size=pool_size,
        db_max_overflow=_read(
            ("DB_MAX_OVERFLOW", "DATABASE_MAX_OVERFLOW"), str(pool_size), _number(int, 0, 1000)
        ),
        db_startup_timeout=_read("DB_STARTUP_TIMEOUT", "30", _number(float, 0, 3600)),
        host=_read("HOST", "127.0.0.1", str.strip),
        port=_read("PORT", "8002", _number(int, 1, 65535)),
        cors_origins=_read("CORS_ORIGINS", "*", _origins),
        events_chunk_interval=_read("EVENTS_CHUNK_INTERVAL", "1 day", _chunk_interval),
        events_retention=_read("EVENTS_RETENTION", "3 months", _retention),
        retention_check_interval=_read("RETENTION_CHECK_INTERVAL", "3600", _number(float, 0)),
        rollup_job_interval=_read("ROLLUP_JOB_INTERVAL", "60", _number(float, 0)),
        rollup_fold_interval=_read("ROLLUP_FOLD_INTERVAL", "5", _number(float, 0)),
        rollup_fold_max_delay=_read("ROLLUP_FOLD_MAX_DELAY", "30", _number(float, 0)),
        session_timeout=_read("SESSION_TIMEOUT", "30 minutes", _session_timeout),
        session_job_interval=_read("SESSION_JOB_INTERVAL", "60", _number(float, 0)),
        batch_max_events=_read("BATCH_MAX_EVENTS", "10000", _number(int, 1, 1_000_000)),
        max_body_bytes=max_body,
        body_read_timeout=_read("BODY_READ_TIMEOUT", "30", _number(float, 0.1, 3600)),
        header_read_timeout=_read("HEADER_READ_TIMEOUT", "10", _number(float, 0.1, 3600)),
        ingest_memory_bytes=_read(
            "INGEST_MEMORY_BYTES", str(256 * 1024 * 1024), _number(int, 2 * max_body, 1 << 40)
        ),
        ingest_queue_max_events=_read("INGEST_QUEUE_MAX_EVENTS", "200000", _number(int, 1, 100_000_000)),
        ingest_flush_max_events=_read("INGEST_FLUSH_MAX_EVENTS", "5000", _number(int, 1, 1_000_000)),
        ingest_flush_interval=_read("INGEST_FLUSH_INTERVAL", "0.005", _number(float, 0, 10)),
        ingest_writers=_read("INGEST_WRITERS", "3", _number(int, 1, 64)),
        api_keys=_read("API_KEYS", "", _keys),
        trusted_proxies=_read("TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies),
        log_level=_read("LOG_LEVEL", "INFO", _log_level),
        log_format=cast(Literal["text", "json"], _read("LOG_FORMAT", "text", _choice("text", "json"))),
        prometheus_multiproc_dir=_read("PROMETHEUS_MULTIPROC_DIR", "", _directory),
        docs_enabled=_read("DOCS_ENABLED", "true", _boolean),
        stats_statement_timeout=_read("STATS_STATEMENT_TIMEOUT", "30", _number(float, 0, 86400)),
        exports=load_export_settings(),
        **site,
        stats_database_url=_stats_database_url(),
        queue=load_queue_settings(site["redis_url"]),
    )


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, loaded once."""
    return load_settings()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a record's `fields` (the
    request log's method, route, status, duration_ms, events) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(settings: Settings) -> None:
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
