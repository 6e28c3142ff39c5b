"""`ordertrack db upgrade` and `ordertrack orders add|list`, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ordertrack

SRC = str(Path(ordertrack.__file__).resolve().parent.parent)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/ordertrack.db"
    return request.getfixturevalue("pg_url")


def ordertrack_cli(*args: str, database_url: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ordertrack", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def test_operator_registers_and_lists_orders(database_url, tmp_path):
    upgraded = ordertrack_cli("db", "upgrade", database_url=database_url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "schema version 3" in upgraded.stdout

    added = ordertrack_cli(
        "orders", "add", "--order-id", "ord_1a2b", "--user-id", "user_42", "--carrier", "dhl",
        "--tracking-number", "JD014600006281230500", "--region", "us-east-1",
        database_url=database_url, cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    assert "ord_1a2b" in added.stdout
    added = ordertrack_cli(
        "orders", "add", "--order-id", "ord_ups", "--user-id", "user_7", "--carrier", "ups",
        "--tracking-number", "1Z999AA10123456784", "--status", "in_transit",
        database_url=database_url, cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr

    listed = ordertrack_cli("orders", "list", "--json", database_url=database_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    orders = json.loads(listed.stdout)
    assert [(o["order_id"], o["carrier"], o["status"]) for o in orders] == [
        ("ord_1a2b", "dhl", "shipped"), ("ord_ups", "ups", "in_transit")
    ]
    assert orders[0]["user_id"] == "user_42"
    assert orders[0]["tracking_number"] == "JD014600006281230500"
    assert orders[0]["region"] == "us-east-1"

    only_ups = ordertrack_cli(
        "orders", "list", "--json", "--carrier", "ups", database_url=database_url, cwd=tmp_path
    )
    assert [o["order_id"] for o in json.loads(only_ups.stdout)] == ["ord_ups"]

    table = ordertrack_cli("orders", "list", database_url=database_url, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["ORDER_ID", "USER_ID", "CARRIER", "TRACKING_NUMBER", "STATUS"]
    assert lines[1].split()[:5] == ["ord_1a2b", "user_42", "dhl", "JD014600006281230500", "shipped"]

    again = ordertrack_cli("db", "upgrade", database_url=database_url, cwd=tmp_path)
    assert again.returncode == 0 and "already up to date" in again.stdout


def test_operator_mistakes_get_one_clear_line(database_url, tmp_path):
    add = ("orders", "add", "--order-id", "ord_1", "--user-id", "u1", "--tracking-number", "N1")
    first = ordertrack_cli(*add, "--carrier", "fedex", database_url=database_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    duplicate = ordertrack_cli(*add, "--carrier", "fedex", database_url=database_url, cwd=tmp_path)
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip().splitlines() == [
        "ordertrack orders: order 'ord_1' already exists; nothing changed"
    ]

    bad_carrier = ordertrack_cli(*add, "--carrier", "royalmail", database_url=database_url,
                                 cwd=tmp_path)
    assert bad_carrier.returncode == 2
    assert len(bad_carrier.stderr.strip().splitlines()) == 1
    assert "unknown carrier 'royalmail'" in bad_carrier.stderr

    bad_status = ordertrack_cli(*add, "--carrier", "dhl", "--status", "lost",
                                database_url=database_url, cwd=tmp_path)
    assert bad_status.returncode == 2
    assert len(bad_status.stderr.strip().splitlines()) == 1
    assert "unknown status 'lost'" in bad_status.stderr

    listed = ordertrack_cli("orders", "list", "--json", database_url=database_url, cwd=tmp_path)
    assert [o["carrier"] for o in json.loads(listed.stdout)] == ["fedex"]


def test_database_url_flag_and_default_file(tmp_path):
    flagged = tmp_path / "flag.db"
    added = ordertrack_cli(
        "orders", "add", "--order-id", "o1", "--user-id", "u1", "--carrier", "dhl",
        "--tracking-number", "N1", "--database-url", f"sqlite:///{flagged}",
        database_url="mysql://ignored-because-the-flag-wins", cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    assert flagged.exists()

    # no DATABASE_URL at all: the embedded default ./var/ordertrack.db
    default = ordertrack_cli("db", "upgrade", database_url=None, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "var" / "ordertrack.db").exists()

    bad = ordertrack_cli("orders", "list", database_url="mysql://db/x", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ordertrack orders: invalid DATABASE_URL='mysql://db/x': unsupported database URL "
        "scheme 'mysql://': expected sqlite:///path.db, a file path, or postgresql://..."
    ]


def test_listing_a_missing_database_is_an_error_not_a_new_file(tmp_path):
    default = ordertrack_cli("orders", "list", database_url=None, cwd=tmp_path)
    assert default.returncode == 1
    assert default.stderr.strip().splitlines() == [default.stderr.strip()]
    assert "no database at ./var/ordertrack.db" in default.stderr
    assert "ordertrack db upgrade" in default.stderr

    named = tmp_path / "typo" / "ordertrak.db"
    listed = ordertrack_cli("orders", "list", database_url=f"sqlite:///{named}", cwd=tmp_path)
    assert listed.returncode == 1
    assert "no database at " in listed.stderr and str(named) in listed.stderr
    assert not named.parent.exists()

    # nobody named a path: `add` does not create the embedded default either
    added = ordertrack_cli("orders", "add", "--order-id", "o1", "--user-id", "u1", "--carrier",
                           "dhl", "--tracking-number", "N1", database_url=None, cwd=tmp_path)
    assert added.returncode == 1
    assert "no database at ./var/ordertrack.db" in added.stderr
    assert list(tmp_path.iterdir()) == []
