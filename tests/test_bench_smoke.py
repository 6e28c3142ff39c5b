"""The capacity bench runs end to end in its --quick form: real redis-server, a real
`ordertrack serve` pod, real picows clients in worker processes. Figures are printed, not
asserted (the machine is shared); what is asserted is what a user of the bench relies on."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO, wait_for, wait_for_async


def test_quick_bench_delivers_every_update_writes_a_report_and_leaves_no_process(tmp_path):
    """`bench.capacity --quick` proves the harness runs: 500 connections, every update
    delivered, a report; and the pod, redis-server and load generators it starts as children
    do not outlive it. (The load profiles and the peer runs: `make bench-smoke`.)"""
    import psutil

    out = tmp_path / "capacity.json"
    stdout = tmp_path / "stdout.txt"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with open(stdout, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.capacity", "--quick", "--out", str(out)],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    bench = psutil.Process(proc.pid)
    descendants: set[int] = set()
    while proc.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants |= {p.pid for p in bench.children(recursive=True)}
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)
    text = stdout.read_text(errors="replace")
    print(text)
    assert proc.returncode == 0, text[-3000:]

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
    assert "RSS/conn KB" in text and "p99" in text

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
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not alive(), 10, interval=0.1, what="the bench's children gone")
    assert alive() == []


@pytest.mark.bench_smoke
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


@pytest.mark.bench_smoke
def test_smoke_load_with_a_peer_runs_the_same_scenario_against_it_and_compares(tmp_path):
    """`--peers websockets`: after our pod, the same timeline against the websockets peer (one
    Redis connection per WebSocket, fed by PUBLISH), and the report puts its figures beside
    ours with our ratio to each. The peer needs nothing beyond the .venv, so this always runs."""
    out = tmp_path / "load"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.load", "--profile", "smoke", "--connections", "200",
         "--hold-seconds", "4", "--peers", "websockets", "--no-artillery", "--out", str(out),
         "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["peers_skipped"] == {}
    peer = report["results"]["websockets"]
    # every client got its ack: the peer's Redis pool no longer caps its subscriptions at 100
    assert peer["connections"]["established"] == 200, peer["connections"]
    assert peer["feed"]["mode"] == "redis-publish" and peer["feed"]["sent"] > 0
    assert peer["delivery"]["received_live"] > 0
    row = report["ratios"]["websockets"]
    assert {"memory per connection (KB)", "establishment p99 (ms)", "delivery p99 (ms)",
            "CPU per 1,000 messages/s (% of a core)"} <= set(row)
    markdown = (out / "report.md").read_text()
    assert "| figure | ordertrack | websockets | ours / websockets |" in markdown
    assert "- websockets wins on" in markdown
    assert report["artillery"] == {"skipped": "not in this run (--peers runs it, --no-artillery "
                                              "does not)"}


def test_feeder_publishes_every_scheduled_update_through_the_publish_lua(redis_url):
    """The feeder's updates reach Redis the way the gateway's do (state, stream, PUBLISH),
    every one of them, in batches (fewer round trips than updates), with its lateness."""
    import asyncio

    import redis.asyncio as aioredis
    from bench.lib import order_id
    from bench.load.feed import Feeder, FeedSpec

    from ordertrack import redis_layout

    orders = 150

    async def scenario():
        watcher = aioredis.Redis.from_url(redis_url)
        pubsub = watcher.pubsub()
        await pubsub.psubscribe("order:tracking:*")
        spec = FeedSpec("lua", redis_url, orders, interval=0.5, hold_start=time.time() + 0.3,
                        hold_seconds=1.0, first_order=1_000)
        result = await Feeder(spec).run()
        seen = 0
        deadline = time.monotonic() + 10
        while seen < result["sent"] and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            seen += message is not None
        states = [await watcher.hget(redis_layout.state(order_id(1_000 + j)), "seq") for j in range(orders)]
        streams = [await watcher.xlen(redis_layout.stream(order_id(1_000 + j))) for j in range(orders)]
        await pubsub.aclose()
        await watcher.aclose()
        return result, seen, states, streams

    result, seen, states, streams = asyncio.run(scenario())
    assert result["scheduled"] == result["sent"] == 2 * orders
    assert result["errors"] == result["refused"] == 0
    assert seen == 2 * orders
    assert states == [b"2"] * orders and streams == [2] * orders
    assert result["batches"] < result["sent"]
    assert set(result["lateness"]) == {"p50_ms", "p99_ms", "max_ms"}


def test_a_failed_publish_gives_its_seq_back_so_clients_see_no_gap(redis_url):
    """An update Redis refuses (here: the order's state key has the wrong type) is counted as
    an error and its seq is reused by the order's next update: what the clients receive for
    the order still counts 1, 2, ... without a hole."""
    import asyncio

    import redis.asyncio as aioredis
    from bench.lib import order_id
    from bench.load.feed import Feeder, FeedSpec

    from ordertrack import redis_layout

    broken = order_id(1)

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        await client.set(redis_layout.state(broken), "not a hash")
        pubsub = client.pubsub()
        await pubsub.subscribe(redis_layout.channel(broken))
        feeder = Feeder(FeedSpec("lua", redis_url, 2, interval=0.6, hold_start=time.time() + 0.2,
                                 hold_seconds=2.4))

        async def repair():  # once the first publish of the broken order has failed
            await wait_for_async(lambda: feeder.errors, 10, interval=0.01, what="a failed publish")
            await client.delete(redis_layout.state(broken))

        repairing = asyncio.ensure_future(repair())
        result = await feeder.run()
        await repairing
        seqs = []
        deadline = time.monotonic() + 10
        expected = result["sent"] - 4  # order 0: its 4 updates all went through
        while len(seqs) < expected and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                seqs.append(json.loads(message["data"])["seq"])
        await pubsub.aclose()
        await client.aclose()
        return result, seqs

    result, seqs = asyncio.run(scenario())
    assert result["errors"] >= 1
    assert result["sent"] + result["errors"] == result["scheduled"] == 8
    assert seqs and seqs == list(range(1, len(seqs) + 1))


def test_establishment_is_timed_from_the_tcp_connect_not_from_the_101():
    """The generator's establishment figure is "TCP connect -> connection_ack": a server that
    takes 0.3 s to answer the upgrade and 0.2 s more to ack is measured at 0.5 s or more
    (picows builds the listener only after the 101, so a clock started there would say ~0.2),
    split at the 101 into its upgrade (>= 0.3 s) and its admission (>= 0.2 s)."""
    import asyncio
    import base64
    import hashlib

    from bench.load.client import Worker, WorkerSpec

    delay, ack_delay = 0.3, 0.2
    ack = b'{"event":"connection_ack","data":{"seq":0}}'

    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                     b"\r\nSec-WebSocket-Protocol: vantage-tracking-v1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(ack_delay)
        writer.write(bytes([0x81, len(ack)]) + ack)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    async def scenario():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        worker = Worker(WorkerSpec(0, 1, 1, "127.0.0.2",
                                   f"ws://127.0.0.1:{port}/ws/orders/{{order}}/track",
                                   "subprotocol:secret"))
        assert await worker.connect(0)
        await worker._close(worker.clients.pop(0), grace=1.0)
        server.close()
        return worker.results

    results = asyncio.run(scenario())
    ((_, took),) = results.establish
    assert took >= delay + ack_delay
    ((upgrade, admission),) = results.establish_split
    assert upgrade >= delay and admission >= ack_delay
    assert abs(upgrade + admission - took) < 1e-9


def test_artillery_think_times_are_milliseconds_it_cannot_misread():
    """Artillery reads a whole `think` as seconds but a bare "2.5" as 2.5 ms."""
    from bench.artillery.run import overrides, think

    assert think(2.5) == "2500ms" and think(25) == "25000ms"
    variables = overrides(10, 5, 12, 2.5, Path(__file__))["config"]["variables"]
    assert variables == {"heartbeat_think": "2500ms", "heartbeats": 5}


def test_load_schedule_is_open_loop_and_reconnects_follow_the_log_rate():
    from bench.load.feed import due_updates, next_batch, scheduled_at
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
    # update n is due at scheduled_at(n): exactly n + 1 are due then
    assert all(due_updates(45_000, 30, scheduled_at(n, 45_000, 30)) == n + 1
               for n in (0, 1, 1_499, 44_999))
    # a batch is what is due and not yet sent, capped, and never past the last update
    assert next_batch(10, 25, 100) == range(10, 25)
    assert next_batch(10, 5_000, 100, limit=1_000) == range(10, 100)
    assert next_batch(0, 5_000, 10_000, limit=1_000) == range(0, 1_000)
    assert not next_batch(25, 25, 100)


def test_pods_share_one_port_with_reuse_port(procs, tmp_path, redis_url, keys):
    """The cluster profile's load balancer: pods with REUSE_PORT=true listen on one port and
    the kernel spreads connections over them; without it the second pod cannot bind."""
    import asyncio

    from tests.support import free_port
    from tests.support.pods import connect, recv_event, start_pod

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


def test_server_cpu_pins_the_server_and_moves_everything_else_off_its_core():
    """`bench.load --server-cpu N`: the pod and each peer start under `taskset -c N`, and the
    harness (so its generator, feeder and Redis children) runs on the other CPUs."""
    import os

    script = ("import os, json; from bench import lib; lib.pin_server({%d}); "
              "print(json.dumps([sorted(os.sched_getaffinity(0)), lib.pod_command()[:4]]))")
    cpus = sorted(os.sched_getaffinity(0))
    last = cpus[-1]
    done = subprocess.run([sys.executable, "-c", script % last], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if len(cpus) < 2:  # one CPU: nothing left for the rest, refused in one line
        assert done.returncode != 0 and "keep one for the rest" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    affinity, command = json.loads(done.stdout)
    assert affinity == [c for c in cpus if c != last]
    assert command == ["taskset", "-a", "-c", str(last)]
