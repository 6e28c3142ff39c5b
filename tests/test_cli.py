"""The `ordertrack` command line as an operator meets it: help, version, and `flag` mistakes
that are one clear line and change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

import ordertrack
from ordertrack import redis_layout
from tests.support import free_port


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
    assert result.stderr.startswith(f"ordertrack flag: cannot reach Redis at {url} "
                                    "(from REDIS_URL): ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def said_redis(result: subprocess.CompletedProcess) -> dict:
    """The one line `flag` writes on stderr: JSON, naming its Redis."""
    (line,) = result.stderr.strip().splitlines()
    return json.loads(line)


def test_flag_says_which_redis_it_uses_on_every_call(tmp_path, redis_url):
    read = ordertrack_cli("flag", cwd=tmp_path, REDIS_URL=redis_url)
    assert read.returncode == 0, read.stderr
    said = said_redis(read)
    assert (said["redis_url"], said["redis_from"]) == (redis_url, "environment")
    assert redis_url in said["msg"]
    assert json.loads(read.stdout)["enabled"] in (True, False)

    named = ordertrack_cli("flag", "--redis-url", redis_url, "--percentage", "100", cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert said_redis(named)["redis_from"] == "flag"

    env_file = tmp_path / "var" / "dev" / "env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text(f"export REDIS_URL={redis_url}\nexport ORDERTRACK_DEV_PID={os.getpid()}\n")
    dev = ordertrack_cli("flag", "--percentage", "100", cwd=tmp_path)
    assert dev.returncode == 0, dev.stderr
    assert (said_redis(dev)["redis_url"], said_redis(dev)["redis_from"]) == (redis_url, "dev_stack")


def test_flag_refuses_to_write_to_the_default_redis_nobody_named(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url)
    before = client.get(redis_layout.FLAG_KEY)
    env_file = tmp_path / "var" / "dev" / "env"
    env_file.parent.mkdir(parents=True)
    # a dev stack that is gone (its pid is not running): its file does not count
    env_file.write_text(f"export REDIS_URL={redis_url}\nexport ORDERTRACK_DEV_PID=999999999\n")
    result = ordertrack_cli("flag", "--enabled", "false", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ordertrack flag: not writing to redis://127.0.0.1:6379/0: "
                                    "REDIS_URL is unset")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert client.get(redis_layout.FLAG_KEY) == before
    client.close()


def test_flag_refuses_an_unknown_carrier_and_writes_nothing(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url)
    set_ups = ordertrack_cli("flag", "--carriers", "UPS", cwd=tmp_path, REDIS_URL=redis_url)
    assert set_ups.returncode == 0, set_ups.stderr
    before = client.get(redis_layout.FLAG_KEY)
    assert b'"carriers":["ups"]' in before

    for bad, said in ((("--carriers", "royalmail"), "unknown carrier 'royalmail'"),
                      (("--enabled", "false", "--carriers", "dhl,royalmail"), "'royalmail'"),
                      (("--enabled", "false", "--percentage", "150"), "between 0 and 100")):
        result = ordertrack_cli("flag", *bad, cwd=tmp_path, REDIS_URL=redis_url)
        assert result.returncode == 2, bad
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert said in result.stderr
        assert client.get(redis_layout.FLAG_KEY) == before
    client.close()


def test_operator_commands_take_the_dev_env_file_but_the_environment_wins(tmp_path):
    dev_db, own_db = tmp_path / "dev.db", tmp_path / "own.db"
    for db in (dev_db, own_db):
        made = ordertrack_cli("db", "upgrade", "--database-url", f"sqlite:///{db}", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    added = ordertrack_cli("orders", "add", "--order-id", "ord_in_dev", "--user-id", "u1",
                           "--carrier", "dhl", "--tracking-number", "N1", "--database-url",
                           f"sqlite:///{dev_db}", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    env_file = tmp_path / "var" / "dev" / "env"
    env_file.parent.mkdir(parents=True)
    # as `ordertrack dev` writes it; this test's own pid stands for a live supervisor
    env_file.write_text(f"export REDIS_URL=redis://127.0.0.1:{free_port()}/0\n"
                        f"export DATABASE_URL=sqlite:///{dev_db}\n"
                        f"export ORDERTRACK_DEV_PID={os.getpid()}\n")

    found = ordertrack_cli("orders", "list", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert [o["order_id"] for o in json.loads(found.stdout)] == ["ord_in_dev"]
    assert "using the running dev stack's DATABASE_URL from var/dev/env" in found.stderr

    own = ordertrack_cli("orders", "list", "--json", cwd=tmp_path, DATABASE_URL=f"sqlite:///{own_db}")
    assert own.returncode == 0 and json.loads(own.stdout) == [] and own.stderr == ""

    # flag goes to the dev stack's Redis (here: one that is not running), not 127.0.0.1:6379
    flag = ordertrack_cli("flag", cwd=tmp_path)
    assert flag.returncode == 1 and "cannot reach Redis at redis://127.0.0.1:" in flag.stderr
    assert ":6379" not in flag.stderr


def test_token_mints_with_the_dev_key_pair_and_names_one_or_several_orders(tmp_path):
    import jwt

    one = ordertrack_cli("token", "--user", "u1", "--order", "ord_a", "--ttl", "60", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    public = (tmp_path / ".dev" / "keys" / "jwt-public.pem").read_bytes()  # created on first use
    claims = jwt.decode(one.stdout.strip(), public, algorithms=["RS256"])
    assert claims["sub"] == "u1" and claims["order_id"] == "ord_a" and "order_ids" not in claims
    assert claims["exp"] - claims["iat"] == 60

    several = ordertrack_cli("token", "--user", "u1", "--order", "ord_a", "--order", "ord_b",
                             "--jwt-issuer", "https://auth.example", cwd=tmp_path)
    claims = jwt.decode(several.stdout.strip(), public, algorithms=["RS256"],
                        issuer="https://auth.example")
    assert claims["order_ids"] == ["ord_a", "ord_b"] and "order_id" not in claims

    missing = ordertrack_cli("token", "--user", "u1", "--order", "ord_a", cwd=tmp_path,
                             JWT_PRIVATE_KEY=str(tmp_path / "nope.pem"))
    assert missing.returncode == 2
    assert missing.stderr == f"ordertrack token: JWT_PRIVATE_KEY: no such file {tmp_path / 'nope.pem'}\n"
