"""`ordertrack dev` as a newcomer runs it: the whole system, a working tracking page, children
that come back when they die, operator commands that reach it, fresh demo shipments per start,
and nothing left running after Ctrl-C (even under `| tee`) or after the supervisor is killed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import REPO, free_port, wait_for
from tests.test_ingest import metric

READY_LINE = "Ctrl-C stops everything"


class Dev:
    """A real `ordertrack dev` process on free ports, its output collected line by line."""

    def __init__(self, cwd: Path, **env: str):
        self.cwd = cwd
        self.ports = {name: free_port() for name in
                      ("PORT", "API_PORT", "SANDBOX_PORT", "METRICS_PORT", "GATEWAY_METRICS_PORT",
                       "INGEST_PORT", "PROMETHEUS_PORT")}
        full_env = {**os.environ, **{k: str(v) for k, v in self.ports.items()},
                    "PYTHONUNBUFFERED": "1", **env}
        for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_URL"):
            full_env.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "ordertrack", "dev"], cwd=cwd,
                                     env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if READY_LINE in line:
                break
        assert READY_LINE in self.text, self.text
        self.children = psutil.Process(self.proc.pid).children(recursive=True)
        # redis, sandbox, ingest, gateway, pod, api, prometheus
        assert len(self.children) >= 7, self.text
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", self.text).group(1))
        self.ports["REDIS"] = redis_port

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def pages(self) -> list[tuple[str, str, str]]:
        """(page URL, order_id, token) for every printed tracking page."""
        return re.findall(r"(http://\S+/orders/(\S+?)#token=(\S+))", self.text)

    def follow(self) -> None:
        """Keep collecting output in the background (after start-up)."""
        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
        threading.Thread(target=read, daemon=True).start()

    def child(self, word: str) -> psutil.Process:
        return next(c for c in self.children if word in c.cmdline())

    def tracking(self, order_id: str, token: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.ports['API_PORT']}/api/v2/orders/{order_id}"
                         "/tracking", headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)

    def assert_nothing_left(self) -> None:
        def gone():
            return all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE
                       for c in self.children)
        wait_for(gone, 20, what="every child of ordertrack dev to exit")
        for name, port in self.ports.items():
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"{name} {port} still open"


def ordertrack_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "ordertrack", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_dev_runs_everything_and_ctrl_c_with_stdout_gone_stops_every_process(tmp_path):
    dev = Dev(tmp_path, DEV_DIR=str(tmp_path / "dev"))
    try:
        pages = dev.pages()
        assert len(pages) == 3, dev.text
        page_url, order_id, token = pages[0]
        page = httpx.get(page_url.split("#")[0], timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()

        # the gateway polls the sandbox and the order's history fills in
        wait_for(lambda: dev.tracking(order_id, token).json()["history"], 30,
                 what="demo order history")
        assert httpx.get(f"http://127.0.0.1:{dev.ports['PORT']}/readyz", timeout=5).status_code == 200

        # Debian's prometheus scrapes every process, with deploy/prometheus's rules loaded
        prometheus = f"http://127.0.0.1:{dev.ports['PROMETHEUS_PORT']}"
        assert f"prometheus    {prometheus}" in dev.text

        def every_target_up():
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()
            health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
            return health == dict.fromkeys(("ws-order-tracking", "logistics-gateway",
                                            "order-tracking-api", "order-tracking-ingest"), "up")

        wait_for(every_target_up, 30, interval=0.5, what="every process scraped")
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {"ordertrack-ratios", "ordertrack-rollout", "ordertrack-alerts"} <= {
            g["name"] for g in groups}
    finally:
        # `make run | tee run.log` then Ctrl-C: tee is gone before dev starts its cleanup
        dev.proc.stdout.close()
        code = dev.stop()
    assert code == 0
    dev.assert_nothing_left()
    assert_every_log_line_is_one_json_object(tmp_path / "dev" / "logs")


def assert_every_log_line_is_one_json_object(log_dir: Path) -> None:
    """Every line each of our processes wrote from start to stop (redis-server's own log
    aside) is one JSON object: a library's warning or a traceback may not slip out as text."""
    logs = [p for p in sorted(log_dir.glob("*.log")) if p.stem != "redis"]
    assert {p.stem for p in logs} >= {"sandbox", "ingest", "gateway", "pod", "api"}, logs
    for log in logs:
        lines = log.read_text().splitlines()
        assert lines, f"{log.name} is empty"
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            assert isinstance(entry, dict), f"{log.name}:{number} is not one JSON object: {line!r}"


def test_a_dead_child_is_restarted_operator_commands_reach_the_stack_and_nothing_outlives_it(
        tmp_path):
    dev = Dev(tmp_path)  # the default DEV_DIR, var/dev under the working directory
    dev.follow()
    try:
        _, order_id, token = dev.pages()[0]
        pod = dev.child("serve")
        pod.kill()
        # the API keeps answering while the pod is down, and the pod comes back
        assert dev.tracking(order_id, token).status_code == 200
        wait_for(lambda: "pod was killed by SIGKILL; restarting it" in dev.text, 15,
                 what="the restart line")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{dev.ports['PORT']}/readyz",
                                   timeout=2).status_code == 200, 30, what="the pod back")
        assert "pod restarted" in dev.text
        assert dev.proc.poll() is None

        # operator commands run from the same directory find the dev stack's store and Redis
        listed = ordertrack_cli("orders", "list", "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert {o["order_id"] for o in json.loads(listed.stdout)} == {
            page[1] for page in dev.pages()}
        assert not (tmp_path / "var" / "ordertrack.db").exists()

        # ... and `rollout report` its Redis and Prometheus, with no setting given
        report = ordertrack_cli("rollout", "report", "--json", cwd=tmp_path)
        assert report.returncode == 0, report.stderr
        assert "REDIS_URL and PROMETHEUS_URL from" in report.stderr
        assert json.loads(report.stdout)["prometheus"] == (
            f"http://127.0.0.1:{dev.ports['PROMETHEUS_PORT']}")

        off = ordertrack_cli("flag", "--enabled", "false", cwd=tmp_path)
        assert off.returncode == 0, off.stderr
        wait_for(lambda: dev.tracking(order_id, token).json()["realtime"]["enabled"] is False,
                 15, what="the API to see the kill switch")
    finally:
        dev.children = psutil.Process(dev.proc.pid).children(recursive=True)
        # the supervisor dies without any cleanup of its own: the kernel stops its children
        dev.proc.kill()
        dev.proc.wait(10)
    dev.assert_nothing_left()
    # the settings file of a dead dev stack is not used
    stale = ordertrack_cli("orders", "list", cwd=tmp_path)
    assert stale.returncode == 1
    assert "no database at ./var/ordertrack.db" in stale.stderr


@pytest.mark.timeout(300)
def test_a_second_run_prints_fresh_shipments_and_the_store_gets_no_event_twice(tmp_path):
    settings = {"DEV_DIR": str(tmp_path / "dev"), "DEV_POLL_INTERVAL_SECONDS": "1",
                "SANDBOX_TIME_SCALE": "60"}
    first = Dev(tmp_path, **settings)
    try:
        _, old_order, old_token = first.pages()[0]
        wait_for(lambda: first.tracking(old_order, old_token).json()["history"], 30,
                 what="the first run's first scan")
    finally:
        assert first.stop() == 0

    second = Dev(tmp_path, **settings)
    try:
        fresh = second.pages()
        assert {p[1] for p in fresh}.isdisjoint({p[1] for p in first.pages()})
        for _, order_id, token in fresh:
            assert second.tracking(order_id, token).json()["status"] != "delivered"

        # the new sandbox process reports the old order's scans again: it pushes them (its
        # push state starts empty) or, for an order without push, the new gateway polls them;
        # the store has them already
        old_run = old_order.split("_")[2].upper()  # ord_demo_<run>_dhl
        sandbox = f"http://127.0.0.1:{second.ports['SANDBOX_PORT']}"

        def polled_or_pushed_again():
            numbers = httpx.get(f"{sandbox}/_admin/stats", timeout=5).json()["dhl"][
                "tracking_numbers"]
            polled = any(count >= 1 for number, count in numbers.items()
                         if number.endswith(old_run))
            pushed = any(d["tracking_number"].endswith(old_run) and d["status"] == 200
                         for d in httpx.get(f"{sandbox}/_admin/push", timeout=5).json()[
                             "deliveries"])
            return polled or pushed
        wait_for(polled_or_pushed_again, 30,
                 what="the first run's order polled or pushed again")
        history = second.tracking(old_order, old_token).json()["history"]
        scans = [(event["status"], event["location"]) for event in history]
        assert scans and len(scans) == len(set(scans)), history
    finally:
        assert second.stop() == 0


def test_pushed_scans_reach_the_store_through_ingest(tmp_path):
    """Carrier push in the demo: the sandbox's FedEx webhook and the gateway's UPS and DHL
    subscriptions point at `ordertrack ingest`, and pushed scans land in the REST answer
    although the gateway polls only once an hour."""
    dev = Dev(tmp_path, DEV_DIR=str(tmp_path / "dev"), DEV_POLL_INTERVAL_SECONDS="3600",
              SANDBOX_TIME_SCALE="3000")
    sandbox = f"http://127.0.0.1:{dev.ports['SANDBOX_PORT']}"
    ingest = f"http://127.0.0.1:{dev.ports['INGEST_PORT']}"
    try:
        assert f"carrier push  {ingest}/webhooks/" in dev.text
        pages = {order_id.rsplit("_", 1)[1]: (order_id, token) for _, order_id, token in
                 dev.pages()}
        hooks = httpx.get(f"{sandbox}/_admin/webhooks", timeout=5).json()
        assert hooks["fedex"]["url"] == f"{ingest}/webhooks/fedex"
        wait_for(lambda: {(s["carrier"], s["url"]) for s in httpx.get(
            f"{sandbox}/_admin/webhooks", timeout=5).json()["subscriptions"]} >= {
            ("ups", f"{ingest}/webhooks/ups"), ("dhl", f"{ingest}/webhooks/dhl")}, 30,
            what="the gateway's UPS and DHL push subscriptions")

        stored = 'ordertrack_ingest_events_stored_total{carrier="fedex"}'
        wait_for(lambda: metric(ingest, stored) >= 1, 60,
                 what="a pushed FedEx scan stored by ingest")
        deliveries = httpx.get(f"{sandbox}/_admin/push", timeout=5).json()["deliveries"]
        assert any(d["carrier"] == "fedex" and d["status"] == 200 for d in deliveries)
        order_id, token = pages["fedex"]
        number = dev.tracking(order_id, token).json()["tracking_number"]
        pushed = {d["event"] for d in deliveries
                  if d["tracking_number"] == number and d["status"] == 200}
        assert pushed
        # the REST answer catches up with what ingest stored (bounded wait: a loaded machine)
        wait_for(lambda: len(dev.tracking(order_id, token).json()["history"]) >= len(pushed), 20,
                 what="every pushed FedEx scan in the REST history")
    finally:
        assert dev.stop() == 0
    dev.assert_nothing_left()


def test_dev_refuses_a_busy_port_with_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ordertrack", "dev", "--port", str(port)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 2
    assert "already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1
