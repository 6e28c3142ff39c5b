"""`ordertrack capacity`: its arithmetic checked against the feature log's own staging numbers
(2 pods for 50,000 connections, 1,661 messages/s, 10 pods of 10,000 for 100,000), and the CLI
a planner runs on a report.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ordertrack.commands.capacity import MIB, Measured, parse_orders_per_carrier, plan, pods_needed
from tests.support import REPO

GB = 1e9
MB = 1e6

# The log's "WebSocket Load Testing Results": pod 1 held 25,012 connections in 1.8 GB at 34 %
# CPU; Redis at 1,661 messages/s took 14 MB/s in, 28 MB/s out (2 subscribers), 820 MB, 22 % CPU.
LOG = Measured(
    pod_idle_rss_kb=0.0,
    rss_per_connection_kb=1.8 * GB / 1024 / 25_012,
    pod_cpu_percent_per_1000_deliveries=34.0 / (25_012 / 30 / 1000),
    redis_in_bytes_per_update=14 * MB / 1_661,
    redis_out_bytes_per_update_per_pod=28 * MB / 1_661 / 2,
    redis_memory_bytes_per_order=820 * MB / 49_847,
    redis_cpu_percent_per_1000_updates=22.0 / 1.661,
    client_frame_bytes=200.0,
    pod_connections_per_second=500.0,
    max_connections_per_pod=25_000,
    source="feature log, staging 2025-10-02",
)


def test_the_log_staging_run_needs_2_pods_of_25000_in_1_8_gb():
    p = plan(LOG, 50_000, utilization=1.0)
    assert p.pods == 2
    assert p.connections_per_pod == 25_000
    assert p.memory_request_mib * MIB == pytest.approx(1.8 * GB * 25_000 / 25_012, rel=0.001)
    assert p.pod_cpu_percent == pytest.approx(34.0 * 25_000 / 25_012, rel=0.001)


def test_49847_watchers_updated_every_30_s_are_1661_messages_per_second_on_redis():
    p = plan(LOG, 49_847, max_per_pod=25_000, utilization=1.0)
    assert int(p.redis_updates_per_second) == 1_661
    assert p.redis_ingress_bytes_per_second == pytest.approx(14 * MB, rel=0.001)
    # every pod PSUBSCRIBEs the pattern: egress is the ingress times the pods
    assert p.redis_egress_bytes_per_second == pytest.approx(28 * MB, rel=0.001)
    assert p.redis_memory_mib * MIB == pytest.approx(820 * MB, rel=0.001)
    assert p.redis_cpu_percent == pytest.approx(22.0, rel=0.001)


def test_10_pods_of_10000_hold_100000_but_the_75_percent_target_asks_for_14():
    full = plan(LOG, 100_000, max_per_pod=10_000, utilization=1.0)
    assert full.pods == 10
    # and then losing one pod puts 11,111 on each survivor, above the limit
    assert full.survivors_connections_per_pod == pytest.approx(100_000 / 9)
    assert not full.survivors_within_limit
    # 10,000 clients back within 0.3 s on 9 pods: 3,704/s each, far above the measured 500/s
    assert full.storm_connections_per_second_per_pod == pytest.approx(10_000 / 0.3 / 9)
    assert not full.storm_fits_measured_rate

    at_target = plan(LOG, 100_000, max_per_pod=10_000)
    assert at_target.connections_per_pod_at_target == 7_500
    assert at_target.pods == 14 == pods_needed(100_000, 10_000, 0.75)
    assert at_target.survivors_within_limit


def test_a_single_pod_has_no_survivor_to_absorb_its_clients():
    p = plan(LOG, 100, max_per_pod=10_000)
    assert p.pods == 1
    assert p.storm_connections_per_second_per_pod is None
    assert not p.storm_fits_measured_rate and not p.survivors_within_limit


def test_poll_periods_follow_the_contract_quotas():
    p = plan(LOG, 1_000, orders_per_carrier={"dhl": 1_000, "fedex": 1_000, "ups": 1_000})
    # DHL 2,000/h: 1,000 orders every 30 min; FedEx 30 numbers a request: 34 requests every
    # interval fit 1,000/h, so 2.04 min; UPS 500/h: every 2 h
    assert p.poll_period_seconds == {"dhl": 1_800.0, "fedex": pytest.approx(122.4), "ups": 7_200.0}
    assert plan(LOG, 10, orders_per_carrier={"dhl": 10}).poll_period_seconds == {"dhl": 60.0}


def test_orders_per_carrier_parsing_refuses_what_it_cannot_read():
    assert parse_orders_per_carrier("dhl=2000, FedEx=5") == {"dhl": 2000, "fedex": 5}
    assert parse_orders_per_carrier(None) == {}
    with pytest.raises(ValueError, match="carrier=N"):
        parse_orders_per_carrier("dhl:20")
    with pytest.raises(ValueError, match="unknown carrier"):
        plan(LOG, 10, orders_per_carrier={"royalmail": 3})


def _capacity(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ordertrack", "capacity", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _write_report(path, measured: Measured) -> None:
    from dataclasses import asdict

    path.write_text(json.dumps({"profile": "log", "capacity_inputs": asdict(measured)}))


def test_cli_reads_a_report_and_prints_markdown_and_json(tmp_path):
    report = tmp_path / "report.json"
    _write_report(report, LOG)
    proc = _capacity("--report", str(report), "--connections", "50000",
                     "--target-utilization", "1", "--orders-per-carrier", "dhl=1000")
    assert proc.returncode == 0, proc.stderr
    assert "| pods | 2 (25,000 connections each" in proc.stdout
    assert "| Redis messages/s | 1,667 |" in proc.stdout
    assert "| dhl poll period | 30.0 min |" in proc.stdout
    document = json.loads(proc.stdout.split("```json\n", 1)[1].rsplit("```", 1)[0])
    assert document["plan"]["pods"] == 2

    only = _capacity("--report", str(report), "--connections", "100000",
                     "--max-connections-per-pod", "10000", "--json")
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["plan"]["pods"] == 14


def test_cli_help_shows_an_example():
    proc = _capacity("--help")
    assert proc.returncode == 0
    assert "example:" in proc.stdout and "--orders-per-carrier dhl=" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--report", "/nonexistent/report.json", "--connections", "10"], "cannot read --report"),
    (["--connections", "10", "--orders-per-carrier", "dhl"], "expected carrier=N"),
    (["--connections", "0"], "connections must be positive"),
    (["--connections", "10", "--target-utilization", "0"], "--target-utilization"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    report = tmp_path / "report.json"
    _write_report(report, LOG)
    if "--report" not in args:
        args = ["--report", str(report), *args]
    proc = _capacity(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_refuses_a_report_without_capacity_inputs(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"levels": []}))
    proc = _capacity("--report", str(report), "--connections", "10")
    assert proc.returncode == 2
    assert "no usable capacity_inputs" in proc.stderr
