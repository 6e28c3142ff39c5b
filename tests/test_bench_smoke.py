"""The capacity bench runs end to end in its --quick form: real redis-server, a real
`ordertrack serve` pod, real picows clients in worker processes. Figures are printed, not
asserted (the machine is shared); what is asserted is what a user of the bench relies on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.support import REPO


def test_quick_bench_opens_connections_delivers_every_update_and_writes_a_report(tmp_path):
    out = tmp_path / "capacity.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads(out.read_text())
    (level,) = report["levels"]
    assert level["target"] == 500
    assert level["open"] == 500 and level["acks"] == 500
    assert level["failures"] == {}
    assert level["rss_per_connection_kb"] > 0

    delivery = report["delivery"]
    assert delivery["sent"] > 0
    assert delivery["received"] == delivery["expected_deliveries"] == delivery["sent"]
    assert delivery["count"] == delivery["sent"]  # every update carried a measurable send time
    assert delivery["no_subscriber"] == 0
    assert report["final"]["open"] == 500  # nobody was dropped while publishing

    assert "RSS/conn KB" in proc.stdout and "p99" in proc.stdout


def test_bench_leaves_no_process_behind(tmp_path):
    """The pod, redis-server and load generators are children: none outlives the run."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.capacity", "--quick", "--publish-seconds", "0.5",
         "--out", str(tmp_path / "r.json")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bench = psutil.Process(proc.pid)
    descendants: set[int] = set()
    while proc.poll() is None:
        try:
            descendants |= {p.pid for p in bench.children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    assert proc.returncode == 0
    assert descendants, "the bench started no child processes?"

    def alive() -> list[str]:
        found = []
        for pid in descendants - before:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(f"{pid}: {' '.join(process.cmdline())[:200]}")
            except psutil.NoSuchProcess:
                pass
        return found

    # helpers such as multiprocessing's resource tracker notice their parent is gone a moment
    # after it exits; a real leak is still there seconds later
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive() == []


def test_smoke_load_profile_runs_to_a_report(tmp_path):
    """`make bench-load PROFILE=smoke`: the log's scenario at 1,000 connections, for its exit
    status (figures are not asserted on this shared machine) and its output files."""
    out = tmp_path / "load"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.load", "--profile", "smoke", "--out", str(out), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"report.json", "report.md", "connections.png", "latency.png",
            "resources.png"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["ordertrack"]["connections"]["established"] > 0
    assert "capacity_inputs" in report


def test_load_schedule_is_open_loop_and_reconnects_follow_the_log_rate():
    from bench.load.feed import due_updates
    from bench.load.profiles import PROFILES, reconnect_indices, reconnect_offset, schedule

    pod = PROFILES["pod"]
    # the log: 1,203 graceful disconnects of 49,847 connections = 2.4 %
    assert pod.reconnects == 471 and len(reconnect_indices(19_500, pod.reconnects)) == 471
    assert schedule(500, 500) == 1.0 and schedule(19_499, 500) < pod.ramp_seconds == 39.0
    offsets = [reconnect_offset(r, 471, 150) for r in range(471)]
    assert 0 < min(offsets) and max(offsets) < 150 and offsets == sorted(offsets)
    # one update per connection per interval, at a steady rate
    assert due_updates(19_500, 30, 0) == 1
    assert due_updates(19_500, 30, 30 - 1e-9) == 19_500
    assert due_updates(19_500, 30, 1.0) == 651


def test_pods_share_one_port_with_reuse_port(procs, tmp_path, redis_url, keys):
    """The cluster profile's load balancer: pods with REUSE_PORT=true listen on one port and
    the kernel spreads connections over them; without it the second pod cannot bind."""
    import asyncio

    from tests.pods import connect, recv_event, start_pod
    from tests.support import free_port

    port = free_port()
    pods = [start_pod(procs, tmp_path, redis_url, keys, name=f"pod-{k}", port=port,
                      reuse_port="true") for k in range(2)]

    async def clients():
        opened = []
        for i in range(40):
            ws = await connect(pods[0], keys.token(f"user_{i}", f"ord_{i}"), f"ord_{i}")
            await recv_event(ws, "connection_ack")
            opened.append(ws)
        for ws in opened:
            await ws.close()

    asyncio.run(clients())
    for pod in pods:
        procs.stop(pod.proc)
    served = [len(pod.disconnects()) for pod in pods]
    assert sum(served) == 40
    assert all(count > 0 for count in served), served

    alone = start_pod(procs, tmp_path, redis_url, keys, name="first", port=free_port())
    second = procs.start("serve", env={**alone.env, "POD_NAME": "second"},
                         log=tmp_path / "second.log")
    assert second.wait(15) == 2
    assert "cannot be served" in (tmp_path / "second.log").read_text()
