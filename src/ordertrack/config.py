"""Settings from environment variables, each also a CLI flag.

Every process declares its settings as a tuple of `Setting`s: its own, plus the shared groups
below (`REDIS`, `JWT`, `LOGGING`, `STORE`), so a setting several processes read is declared,
parsed and documented once. `add_flags` turns them into
argparse flags (`HEARTBEAT_INTERVAL_SECONDS` -> `--heartbeat-interval-seconds`), `load` reads
flag, then environment, then default, and validates. A bad value raises `ConfigError` whose
text is the one line the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ordertrack import redis_target
from ordertrack.store.base import DEFAULT_SQLITE_PATH, parse_store_url


class ConfigError(ValueError):
    """A setting has a value the program cannot run with."""


# --- value parsers: str -> value, raising ValueError with a short human reason ---------------


def duration(text: str) -> float:
    """Seconds, fractions allowed (tests run with 0.2 s heartbeats): > 0."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds, e.g. 30 or 0.5") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def non_negative_duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds, e.g. 10 or 0") from None
    if value < 0 or value == float("inf"):
        raise ValueError("expected zero or a positive number of seconds")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a TCP port number") from None
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port number from 0 to 65535")
    return value


def text(value: str) -> str:
    return value


def optional_text(value: str) -> str | None:
    return value or None


def csv_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def redis_url(value: str) -> str:
    """Any topology's URL (one server, Sentinel, Cluster), checked by `redis_target.parse`."""
    redis_target.parse(value.strip())
    return value


def redact_redis_url(value: str) -> str:
    return redis_target.redact(value)


def database_url(value: str) -> str | None:
    """The tracking store's URL, checked by the store's own parser; empty means the default."""
    if not value:
        return None
    parse_store_url(value)
    return value


def log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected debug, info, warning, error or critical")
    return level


def http_url(value: str) -> str:
    """An http(s) base URL such as https://api-eu.dhl.com; empty means unset."""
    if not value:
        return None  # type: ignore[return-value]
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return value


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True)
class Setting:
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    #: how a bad value is shown in the error line (a URL's password as ***)
    shown: Callable[[str], str] = repr

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    @property
    def attr(self) -> str:
        return self.env.lower()


def add_flags(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    for setting in settings:
        default = f" (default {setting.default})" if setting.default not in (None, "") else ""
        parser.add_argument(
            setting.flag,
            dest=setting.attr,
            default=None,
            metavar=setting.env,
            help=f"{setting.help}; env {setting.env}{default}",
        )


def load(
    settings: Iterable[Setting],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> SimpleNamespace:
    """Resolve every setting: flag, else environment, else default. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in settings:
        raw = getattr(args, setting.attr, None) if args is not None else None
        source = setting.flag
        if raw is None:
            raw = environ.get(setting.env)
            source = setting.env
        if raw is None:
            raw = setting.default
            source = f"{setting.env} default"
        if raw is None:
            values[setting.attr] = None
            continue
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {source}={setting.shown(raw)}: {exc}") from None
    return SimpleNamespace(**values)


def default_pod_name() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


# --- the groups every process shares ---------------------------------------------------------

#: docs/redis.md has every URL form with an example; `redis_connect` builds the clients
REDIS: tuple[Setting, ...] = (
    Setting("REDIS_URL", redis_url, "redis://127.0.0.1:6379/0",
            "Redis: redis://, rediss://, unix://, redis+sentinel://h1:26379,h2:26379/service[/db] "
            "or redis+cluster://h1:6379,h2:6379", shown=lambda raw: repr(redact_redis_url(raw))),
    Setting("REDIS_CLUSTER", boolean, "0",
            "treat REDIS_URL's hosts as Redis Cluster seeds (same as a redis+cluster:// URL)"),
)
#: read by `auth.verifier_from_settings`; the push pods and the API verify alike
JWT: tuple[Setting, ...] = (
    Setting("JWT_PUBLIC_KEY", optional_text, None,
            "PEM public key(s) (text, or a path to a PEM file) for RS256/ES256 tokens; "
            "several PEM blocks for a key rotation"),
    Setting("JWT_JWKS_URL", http_url, None, "JWKS URL; keys chosen by kid, refreshed in the background"),
    Setting("JWT_ISSUER", optional_text, None, "required 'iss' claim, when set"),
    Setting("JWT_AUDIENCE", optional_text, None, "required 'aud' claim, when set"),
)
LOGGING: tuple[Setting, ...] = (
    Setting("LOG_LEVEL", log_level, "INFO", "logging level: debug, info, warning, error"),
)
STORE: tuple[Setting, ...] = (
    Setting("DATABASE_URL", database_url, None,
            "tracking store: sqlite:///path.db, a file path or postgresql://... "
            f"(empty: sqlite file {DEFAULT_SQLITE_PATH})"),
)
