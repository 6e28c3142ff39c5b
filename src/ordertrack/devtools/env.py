"""The running dev stack's settings file, `var/dev/env`, and how operator commands find it.

`ordertrack dev` writes the file while it runs (and removes it on exit): `export KEY=value`
lines a shell can source (`. var/dev/env`), plus the supervisor's pid. The operator commands
(`orders`, `flag`, `db`) run from the same directory read it, so they reach the dev stack's
private Redis and SQLite store without any setup; a setting given in the environment or as
a flag still wins. A file left behind by a killed `ordertrack dev` is ignored (its pid is gone).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_DEV_DIR = "var/dev"
ENV_NAME = "env"
PID_KEY = "ORDERTRACK_DEV_PID"
#: the settings an operator command takes from the dev stack
SHARED_KEYS = ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_URL")


def env_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("DEV_DIR") or DEFAULT_DEV_DIR) / ENV_NAME


def format_env(settings: Mapping[str, str], pid: int) -> str:
    lines = ["# written by `ordertrack dev` while it runs; `ordertrack orders|flag|db` read it"]
    lines += [f"export {key}={value}" for key, value in {**settings, PID_KEY: str(pid)}.items()]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """`export KEY=value` / `KEY=value` lines; comments and blank lines skipped."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _alive(pid: str | None) -> bool:
    try:
        os.kill(int(pid or ""), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def running_dev_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The running dev stack's shared settings, or {} when no dev stack runs from here."""
    try:
        values = parse_env(env_path(environ).read_text())
    except OSError:
        return {}
    if not _alive(values.get(PID_KEY)):
        return {}
    return {key: values[key] for key in SHARED_KEYS if key in values}


def apply_dev_settings(environ: dict[str, str], keys: tuple[str, ...]) -> list[str]:
    """Fill `environ` with those of `keys` it lacks from the running dev stack; return them."""
    applied = []
    for key, value in running_dev_settings(environ).items():
        if key in keys and not environ.get(key):
            environ[key] = value
            applied.append(key)
    return applied
