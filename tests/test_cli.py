"""The `ordertrack` command line as an operator meets it: help, version, and `flag` mistakes
that are one clear line and change nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

import ordertrack
from tests.support import free_port

FLAG_KEY = "ws:flag:realtime_order_tracking"


def ordertrack_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "ordertrack", *args], cwd=cwd,
                          env={**full_env, **env}, capture_output=True, text=True, timeout=60)


def test_bare_ordertrack_prints_its_help(tmp_path):
    result = ordertrack_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ordertrack")
    for command in ("serve", "poll", "api", "sandbox", "dev", "token", "db", "orders", "flag"):
        assert f"\n    {command} " in result.stdout
    assert result.stderr == ""


def test_version(tmp_path):
    result = ordertrack_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ordertrack {ordertrack.__version__}"
    assert ordertrack.__version__[0].isdigit()


def test_flag_with_redis_unreachable_is_one_line(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = ordertrack_cli("flag", "--enabled", "false", cwd=tmp_path, REDIS_URL=url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"ordertrack flag: cannot reach Redis at {url}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_flag_refuses_an_unknown_carrier_and_writes_nothing(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url)
    set_ups = ordertrack_cli("flag", "--carriers", "UPS", cwd=tmp_path, REDIS_URL=redis_url)
    assert set_ups.returncode == 0, set_ups.stderr
    before = client.get(FLAG_KEY)
    assert b'"carriers":["ups"]' in before

    for bad, said in ((("--carriers", "royalmail"), "unknown carrier 'royalmail'"),
                      (("--enabled", "false", "--carriers", "dhl,royalmail"), "'royalmail'"),
                      (("--enabled", "false", "--percentage", "150"), "between 0 and 100")):
        result = ordertrack_cli("flag", *bad, cwd=tmp_path, REDIS_URL=redis_url)
        assert result.returncode == 2, bad
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert said in result.stderr
        assert client.get(FLAG_KEY) == before
    client.close()
