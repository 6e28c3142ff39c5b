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
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, TypeVar

from ordertrack import redis_target
from ordertrack.store.base import DEFAULT_SQLITE_PATH, parse_store_url

N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A setting has a value the program cannot run with."""


# --- value parsers: str -> value, raising ValueError with a short human reason ---------------

INF = float("inf")


def number(convert: Callable[[str], N], not_a_number: str, in_range: Callable[[N], bool],
           out_of_range: str) -> Callable[[str], N]:
    """A parser of numbers: `convert` (int or float), then `in_range`; the two texts are the
    ValueError's reason when either fails."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(not_a_number) from None
        if not in_range(value):
            raise ValueError(out_of_range)
        return value

    return parse


#: seconds, fractions allowed (tests run with 0.2 s heartbeats): > 0
duration = number(float, "expected a number of seconds, e.g. 30 or 0.5",
                  lambda value: value > 0 and value != INF, "expected a positive number of seconds")
non_negative_duration = number(float, "expected a number of seconds, e.g. 10 or 0",
                               lambda value: not (value < 0 or value == INF),
                               "expected zero or a positive number of seconds")
positive_int = number(int, "expected a whole number", lambda value: value > 0,
                      "expected a whole number above 0")
non_negative_int = number(int, "expected a whole number", lambda value: value >= 0,
                          "expected a whole number, 0 or above")
port = number(int, "expected a TCP port number", lambda value: 0 <= value <= 65535,
              "expected a TCP port number from 0 to 65535")


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


#: PUBSUB_MODE's values (README "Scale-out"): `pattern` (one PSUBSCRIBE per pod), `sharded`
#: (SPUBLISH / SSUBSCRIBE per order), `both` (publishers only: the switch-over window)
PUBSUB_PATTERN = "pattern"
PUBSUB_SHARDED = "sharded"
PUBSUB_BOTH = "both"
PUBSUB_MODES = (PUBSUB_PATTERN, PUBSUB_SHARDED, PUBSUB_BOTH)


def pubsub_mode(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in PUBSUB_MODES:
        raise ValueError("expected pattern, sharded or both")
    return lowered


#: the levels LOG_LEVEL accepts, as written in its help and the README (one text, from here)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level.upper()


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


def pick(settings: Iterable[Setting], env: str) -> Setting:
    """The declaration of `env` in a group (for a command that reads one of another's)."""
    return next(setting for setting in settings if setting.env == env)


def redefault(setting: Setting, default: str) -> Setting:
    """The same setting with another default (`ordertrack dev`'s faster sandbox clock)."""
    return replace(setting, default=default)


def describe(setting: Setting) -> str:
    """The setting's help line as `--help` shows it: its text, env name and default."""
    default = f" (default {setting.default})" if setting.default not in (None, "") else ""
    return f"{setting.help}; env {setting.env}{default}"


def add_flags(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """One flag per setting; a setting declared twice (two declarations of one env name) is a
    bug, caught here rather than by argparse's conflict error."""
    seen: dict[str, Setting] = {}
    for setting in settings:
        if setting.env in seen:
            if seen[setting.env] is not setting:
                raise AssertionError(f"{setting.env} is declared twice")
            continue
        seen[setting.env] = setting
        parser.add_argument(setting.flag, dest=setting.attr, default=None,
                            metavar=setting.env, help=describe(setting))


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
    Setting("PUBSUB_MODE", pubsub_mode, PUBSUB_PATTERN,
            "how updates travel: pattern (PUBLISH; each pod PSUBSCRIBEs order:tracking:*), "
            "sharded (SPUBLISH on the order's shard channel; a pod SSUBSCRIBEs to the orders it "
            "serves) or both (publishers only, while switching)"),
)
#: read by `auth.verifier_from_settings`; the push pods and the API verify alike
JWT: tuple[Setting, ...] = (
    Setting("JWT_PUBLIC_KEY", optional_text, None,
            "PEM public key(s) (text, or a path to a PEM file) for RS256/ES256 tokens; "
            "several PEM blocks for a key rotation"),
    Setting("JWT_JWKS_URL", http_url, None, "JWKS URL; keys chosen by kid, refreshed in the background"),
    Setting("JWT_ISSUER", optional_text, None,
            "the tokens' 'iss' claim: required when set (pods, API); put in minted tokens"),
    Setting("JWT_AUDIENCE", optional_text, None,
            "the tokens' 'aud' claim: required when set (pods, API); put in minted tokens"),
)
LOGGING: tuple[Setting, ...] = (
    Setting("LOG_LEVEL", log_level, "info", f"logging level: {', '.join(LOG_LEVELS)}"),
)
STORE: tuple[Setting, ...] = (
    Setting("DATABASE_URL", database_url, None,
            "tracking store: sqlite:///path.db, a file path or postgresql://... "
            f"(empty: sqlite file {DEFAULT_SQLITE_PATH})"),
)
#: the rollout's bounce rule (ordertrack/rollout.py): the API counts a stay under it as a
#: bounce, `ordertrack rollout report` prints it beside the bounce rates
ROLLOUT: tuple[Setting, ...] = (
    Setting("BOUNCE_THRESHOLD_SECONDS", duration, "10",
            "a tracking-page view that stays less than this is a bounce"),
)
#: read by the push pods (metrics, flag targeting) and the API (flag targeting)
REGION: tuple[Setting, ...] = (
    Setting("REGION", text, "local",
            "this process's region: a label of the pod's metrics and the flag's `region` "
            "targeting attribute (pods and API alike)"),
)

# --- carrier webhooks: ingest verifies them, the gateway subscribes with them ----------------
FEDEX_WEBHOOK: tuple[Setting, ...] = (
    Setting("FEDEX_WEBHOOK_SECRET", optional_text, None,
            "FedEx security token: fdx-signature is the HMAC-SHA256 of the body with it"),
)
UPS_WEBHOOK: tuple[Setting, ...] = (
    Setting("UPS_WEBHOOK_CREDENTIAL", optional_text, None,
            "the credential given to UPS Track Alert at subscription, sent back on each "
            "callback in UPS_WEBHOOK_HEADER"),
    Setting("UPS_WEBHOOK_HEADER", text, "Authorization",
            "header carrying the UPS credential (Authorization: Bearer <credential>, or an "
            "API-key header name)"),
)
DHL_WEBHOOK: tuple[Setting, ...] = (
    Setting("DHL_WEBHOOK_SECRET", optional_text, None, "the static header value DHL sends"),
    Setting("DHL_WEBHOOK_HEADER", text, "X-Webhook-Token", "header carrying DHL_WEBHOOK_SECRET"),
)


# --- an HTTP server's limits (`ordertrack.http_edge`), one declaration for every server -------
def http_limits(prefix: str) -> tuple[Setting, ...]:
    """The request limits of the HTTP server whose settings start with `prefix` (`API`,
    `INGEST`): `http_edge.limits.HttpLimits.from_settings(settings, prefix)` reads them."""
    return (
        Setting(f"{prefix}_MAX_HEADER_BYTES", positive_int, "16384",
                "largest request line plus headers accepted; bigger ones get 431"),
        Setting(f"{prefix}_REQUEST_HEADER_TIMEOUT_SECONDS", duration, "10",
                "a request's line and headers must arrive within this time (of the connection "
                "opening, or of the request's first byte); slower ones get 408 and are closed"),
        Setting(f"{prefix}_MAX_BODY_BYTES", positive_int, "1048576",
                "largest request body accepted: a bigger declared Content-Length gets 413 at "
                "once, a chunked body 413 as soon as it passes it; the connection is closed"),
        Setting(f"{prefix}_REQUEST_BODY_TIMEOUT_SECONDS", duration, "30",
                "a request's body must arrive within this time of its head; slower ones get "
                "408 and are closed"),
    )
