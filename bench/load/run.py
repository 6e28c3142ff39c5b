"""`python -m bench.load --profile P --out DIR` (`make bench-load PROFILE=P OUT=DIR`): the log's
staging load test at this machine's scale, against our pods and, in the same run, the peers.

1. a private redis-server, a fresh RS256 key pair, our pod(s): `cluster` runs 3 pods on ONE
   port with REUSE_PORT (SO_REUSEPORT), so the kernel spreads connections over them as a load
   balancer would (a hash of the 4-tuple; no proxy hop added to any figure);
2. load-generator processes (bench/load/client.py) over loopback source addresses 127.0.0.2..
   run the open-loop ramp, hold and ramp down; a feeder process (bench/load/feed.py) publishes
   one update per connection every interval through the gateway's publish Lua;
3. a sampler thread reads the pods' and Redis' RSS/CPU and Redis INFO once a second;
4. Artillery (bench/artillery) against our pod, fed by the same feeder once its users are in;
5. the same scenario against each installed peer (bench/peers), one after another, on the same
   redis-server (flushed between runs), each at the profile's connections or at the most it
   can hold in one process (`PeerSpec.connection_limit`: the websockets peer needs two open
   files per WebSocket), fed its own way;
6. report.json, report.md and PNG plots in OUT.
Redis runs with maxclients at the open-files limit (the websockets peer: one Redis connection
per WebSocket).
Everything listens on 127.0.0.1; every process started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import lib
from bench.lib import (
    free_port,
    generate_key_pair,
    metric_sum,
    order_id,
    scrape,
    source_addresses,
    start_pod,
    start_redis,
    stop_process,
    tail,
    worker_count,
)
from bench.load import report as reporting
from bench.load.client import Timeline, WorkerSpec, worker_main
from bench.load.feed import Feeder, FeedSpec, feed_main
from bench.load.profiles import PROFILES, Profile, reconnect_indices, reconnect_offset
from bench.load.sampler import SCRAPE_EVERY, Sampler, Watched

log = logging.getLogger("ordertrack.bench.load")

#: connections one pod is allowed in the cluster profile (the kernel's spread is not exact;
#: a process may hold 20,000 open files here)
CLUSTER_POD_LIMIT = 19_000
#: new connections a second one load-generator process is asked to start at most
RAMP_PER_WORKER = 125
#: Redis keeps 32 of its open files for itself
REDIS_MAXCLIENTS = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 32
OPENED = "ordertrack_ws_connections_opened_total"
PROBE = "ordertrack_ws_latency_probe_seconds"
#: the load test's pods time every 10th update (LATENCY_SAMPLE_EVERY): a counter per update
SAMPLE_EVERY = 10
#: Artillery: at most this many users, arriving at most this fast
ARTILLERY_USERS = 1_000
ARTILLERY_RATE = 100.0
#: seconds Artillery (node) may take to start and open all its users before we feed anyway
ARTILLERY_START_SECONDS = 30.0


@dataclass
class Target:
    """What the scenario runs against: our pods or one peer."""

    name: str
    url: str  # with {order}
    auth: str  # "jwt" or "subprotocol:<secret>"
    feed_mode: str  # "lua" | "redis-publish" | "nchan-http"
    watched: list[Watched]
    procs: list[subprocess.Popen] = field(default_factory=list)
    nchan_port: int = 0
    resume: bool = True
    #: the most connections it can hold (None: the profile's)
    connection_limit: int | None = None

    def connections(self, profile: Profile) -> int:
        return min(profile.connections, self.connection_limit or profile.connections)


class RunError(RuntimeError):
    pass


# --- starting what is measured ------------------------------------------------------------------


def start_ours(profile: Profile, redis_url: str, public_key: Path, workdir: Path,
               sample_every: int = 0) -> Target:
    """Our pod(s); `sample_every` > 0 has each time every Nth update and its loop's lag
    (LATENCY_SAMPLE_EVERY, push/latency_probe.py), read back at the hold's edges."""
    shared = free_port() if profile.pods > 1 else None
    os.environ["LATENCY_SAMPLE_EVERY"] = str(sample_every)  # start_pod passes os.environ on
    limit = (profile.connections + 500 if profile.pods == 1
             else min(CLUSTER_POD_LIMIT, math.ceil(profile.connections / profile.pods) + 2_000))
    target = Target("ordertrack", "", "jwt", "lua", [])
    try:
        for k in range(profile.pods):
            proc, port, metrics_port = start_pod(
                redis_url, public_key, limit, profile.ping_interval, workdir / f"pod-{k}.log",
                shared_port=shared, name=f"pod-{k}")
            target.procs.append(proc)
            target.watched.append(Watched(f"pod-{k}", proc.pid, metrics_port))
    except Exception:
        for proc in target.procs:
            stop_process(proc)
        raise
    target.url = f"ws://127.0.0.1:{port}/ws/orders/{{order}}/track"
    return target


def installed_peers(wanted: list[str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> PeerSpec to run, name -> why skipped)."""
    from bench.peers import PEERS

    chosen, skipped = {}, {}
    for name in wanted or list(PEERS):
        spec = PEERS.get(name)
        if spec is None:
            skipped[name] = f"peer {name} unknown (bench/peers has {', '.join(PEERS)})"
        elif not spec.installed():
            skipped[name] = f"peer {name} not installed ({spec.reason()})"
        else:
            chosen[name] = spec
    return chosen, skipped


def start_peer(name: str, spec: Any, redis_url: str, workdir: Path) -> Target:
    from bench.peers import TOKEN

    port = free_port()
    proc = spec.start(redis_url, port, workdir)
    return Target(name, spec.ws_url("{order}", port), f"subprotocol:{TOKEN}", spec.publish_mode,
                  [Watched(name, proc.pid)], [proc], nchan_port=port, resume=False,
                  connection_limit=spec.connection_limit)


# --- the scenario -------------------------------------------------------------------------------


def probe_lines(metrics_port: int) -> list[str]:
    """The pod's latency-probe histogram lines (push/latency_probe.py), [] when it has none."""
    return [line for line in scrape(metrics_port).splitlines()
            if line.startswith(PROBE + "_")]


def run_scenario(profile: Profile, target: Target, redis_url: str, redis_pid: int,
                 private_pem: bytes, progress: bool = True, script_check: bool = False,
                 scrape_every: int = SCRAPE_EVERY) -> dict[str, Any]:
    """Drive the whole timeline against `target`; the raw results."""
    n = profile.connections
    # spread the ramp too: one process starting more than RAMP_PER_WORKER connections a
    # second falls behind its schedule on a loaded machine
    workers = min(n, max(worker_count(n), math.ceil(profile.ramp_per_second / RAMP_PER_WORKER)))
    sources = source_addresses(n, workers)
    context = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    processes: list[multiprocessing.process.BaseProcess] = []

    def spawn(fn, spec, name):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=fn, args=(spec, child_end), name=name, daemon=True)
        process.start()
        child_end.close()
        pipes.append(parent_end)
        processes.append(process)
        return parent_end

    sampler = None
    finished: set[multiprocessing.connection.Connection] = set()
    try:
        for w in range(workers):
            spawn(worker_main, WorkerSpec(w, workers, n, sources[w % len(sources)], target.url,
                                          target.auth, private_pem, target.resume,
                                          split_parity=target.feed_mode == "mixed"),
                  f"load-{w}")
        ready = 0
        deadline = time.monotonic() + 300  # RS256-signing every token first
        while ready < workers:
            if not multiprocessing.connection.wait(pipes, max(0, deadline - time.monotonic())):
                raise RunError("load-generator workers did not get ready in time")
            for pipe in multiprocessing.connection.wait(pipes, 0):
                kind, who, payload = pipe.recv()
                if kind != "ready":
                    raise RunError(f"worker {who}: {payload}")
                ready += 1
        sampler = Sampler(target.watched, redis_pid, redis_url, scrape_every=scrape_every)
        sampler.start()
        load_average = os.getloadavg()[0]  # the machine's, as this target's run starts
        t0 = time.time() + 3.0  # the feeder's start-up and two idle samples first
        count = profile.reconnects
        picked = reconnect_indices(n, count)
        timeline = Timeline(t0, profile.ramp_per_second, profile.hold_seconds,
                            profile.ramp_down_per_second or profile.ramp_per_second,
                            profile.heartbeat_interval,
                            {i: reconnect_offset(rank, count, profile.hold_seconds)
                             for rank, i in enumerate(picked)},
                            storm=((profile.storm_at, profile.storm_seconds)
                                   if profile.storm_at is not None else None))
        for pipe in pipes:
            pipe.send(("start", timeline))
        hold_start = t0 + profile.ramp_seconds
        hold_end = hold_start + profile.hold_seconds
        spawn(feed_main, FeedSpec(target.feed_mode, redis_url, n, profile.update_interval,
                                  hold_start, profile.hold_seconds, target.nchan_port,
                                  script_check=script_check), "feed")
        probed = [w for w in target.watched if w.metrics_port]
        probes: dict[str, dict[str, list[str]]] = {w.name: {} for w in probed}
        results: dict[Any, Any] = {}
        status: dict[Any, dict] = {}
        deadline = t0 + profile.total_seconds + 90
        last_print = 0.0
        while len(results) < len(pipes):
            if time.time() > deadline:
                raise RunError(f"the scenario did not finish by t0 + {profile.total_seconds + 90:.0f} s")
            for proc in target.procs:
                if proc.poll() is not None:
                    raise RunError(f"{target.name} exited with code {proc.returncode} mid-run")
            for edge, at in (("hold_start", hold_start), ("hold_end", hold_end)):
                for w in probed:
                    if time.time() >= at and edge not in probes[w.name]:
                        probes[w.name][edge] = probe_lines(w.metrics_port)
            waiting = [pipe for pipe in pipes if pipe not in finished]
            for pipe in multiprocessing.connection.wait(waiting, 1.0):
                try:
                    kind, who, payload = pipe.recv()
                except EOFError:
                    raise RunError("a load-generator process died") from None
                if kind == "status":
                    status[who] = payload
                elif kind == "done":
                    results[who] = payload
                    finished.add(pipe)
                else:
                    raise RunError(f"{who}: {payload}")
            if progress and time.time() - last_print >= 2.0:
                last_print = time.time()
                print(progress_line(target.name, last_print, t0, hold_start, hold_end, status,
                                    sampler.samples[-1] if sampler.samples else None),
                      file=sys.stderr, flush=True)
        samples = sampler.stop()
        sampler = None
    finally:
        if sampler is not None:
            sampler.stop()
        for process in processes:
            # after a failure or an interrupt the workers are mid-timeline: no waiting for them
            process.join(timeout=10 if sampler is None and len(finished) == len(pipes) else 0)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in pipes:
            pipe.close()
    return {
        "target": target.name,
        "timeline": {"t0": t0, "hold_start": hold_start, "hold_end": hold_end,
                     "end": hold_end + profile.ramp_down_seconds},
        "workers": [results[w] for w in range(workers)],
        "feed": results["feed"],
        "samples": samples,
        "pod_probe": probes,
        "pods": [w.name for w in target.watched],
        "connections": n,
        "load_average": load_average,
        "loadgen": {"processes": workers, "source_addresses": sources},
        "url": target.url,
    }


def progress_line(name: str, now: float, t0: float, hold_start: float, hold_end: float,
                  status: dict[Any, dict], sample: dict | None) -> str:
    phase = ("starting" if now < t0 else "ramp" if now < hold_start
             else "hold" if now < hold_end else "ramp-down")
    workers = [s for who, s in status.items() if who != "feed"]
    total = {key: sum(s.get(key, 0) for s in workers)
             for key in ("open", "acks", "failed", "updates", "reconnects_ok")}
    feed = status.get("feed")
    fed = (f"published={feed['sent']:,}/{feed['due']:,} (feeder late {feed['late_ms']:.0f} ms) "
           if feed else "")
    pods = ""
    if sample:
        pods = " ".join(
            f"{pod}={int(v['active']) if v.get('active') is not None else '-'}"
            f"/{v['rss_kb'] / 1024:.0f}MB" for pod, v in sample["pods"].items())
    return (f"[{name} {phase} t={now - t0:6.1f}s] open={total['open']:,} acks={total['acks']:,} "
            f"failed={total['failed']:,} {fed}updates={total['updates']:,} "
            f"reconnects={total['reconnects_ok']:,} {pods}")


def run_artillery(profile: Profile, target: Target, redis_url: str, private_pem: bytes,
                  workdir: Path, progress: bool = True) -> dict[str, Any]:
    """Artillery's own summary of a scripted version of the scenario against our pod, or why it
    did not run: at most ARTILLERY_USERS users the main run did not use (no per-user eviction),
    arriving at most ARTILLERY_RATE/s; once the pod holds them all, the feeder publishes one
    update to each of their orders through the publish Lua (over one update interval) while
    they heartbeat; then they leave."""
    from bench.artillery import run as artillery

    missing = artillery.installed()  # None when it can run, else the reason
    if missing:
        return {"skipped": f"artillery not installed: {missing}"}
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from bench.lib import make_token

    key = load_pem_private_key(private_pem, password=None)
    count = min(profile.connections, ARTILLERY_USERS)
    rate = min(profile.ramp_per_second, ARTILLERY_RATE)
    offset = profile.connections  # users the main run did not use: no per-user eviction
    csv = workdir / "artillery.csv"
    csv.write_text("order_id,token\n" + "".join(
        f"{order_id(offset + i)},{make_token(key, offset + i)}\n" for i in range(count)))
    ramp = count / rate
    # each user stays for the ramp, the feed and a margin: all are in while the feeder runs
    hold = ramp + profile.update_interval + 5.0
    outcome: dict[str, Any] = {}

    def tool() -> None:
        try:
            outcome["summary"] = artillery.run(target.url.split("/ws/")[0], csv, rate, ramp, hold,
                                               profile.heartbeat_interval, workdir / "artillery")
        except Exception as exc:  # noqa: BLE001 - the outside tool's failure goes into the report
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    metrics_port = target.watched[0].metrics_port

    def opened() -> float:  # a counter, bumped at each upgrade (the active gauge is periodic)
        return metric_sum(scrape(metrics_port), OPENED) or 0.0

    before = opened()
    thread = threading.Thread(target=tool, name="artillery", daemon=True)
    thread.start()
    deadline = time.monotonic() + ARTILLERY_START_SECONDS + ramp
    active = 0.0
    while thread.is_alive() and time.monotonic() < deadline:
        active = opened() - before
        if progress:
            print(f"[artillery] {int(active):,} of {count:,} users connected", file=sys.stderr,
                  flush=True)
        if active >= count:
            break
        thread.join(1.0)
    fed = None
    if thread.is_alive():
        import uvloop

        feed = Feeder(FeedSpec("lua", redis_url, count, profile.update_interval, time.time() + 0.2,
                               profile.update_interval, first_order=offset))
        fed = uvloop.run(feed.run())
        fed.pop("lag")
    thread.join(hold + ramp + ARTILLERY_START_SECONDS + 60)
    if thread.is_alive():
        return {"error": "artillery did not finish in time"}
    if "error" in outcome:
        return {"error": outcome["error"]}
    return {"connections": count, "rate": rate, "hold_seconds": hold,
            "connected_when_fed": int(active), "fed": fed, **outcome["summary"]}


# --- the whole run ------------------------------------------------------------------------------


def run(profile: Profile, out: Path, peers: list[str] | None, with_peers: bool,
        progress: bool = True, with_artillery: bool | None = None,
        sample_every: int = SAMPLE_EVERY, script_check: bool = False,
        scrape_every: int = SCRAPE_EVERY, feed_mixed: bool = False) -> dict[str, Any]:
    """The whole run; Artillery goes with the peers unless `with_artillery` says otherwise."""
    if with_artillery is None:  # not with a storm: its users would be cut too
        with_artillery = with_peers and profile.storm_at is None
    workdir = Path(tempfile.mkdtemp(prefix="ordertrack-load-"))
    redis_proc = None
    runs: dict[str, dict] = {}
    extra: dict[str, Any] = {"capped": {}}
    try:
        private_pem, public_path = generate_key_pair(workdir)
        redis_proc, redis_url = start_redis(workdir, maxclients=REDIS_MAXCLIENTS)
        ours = start_ours(profile, redis_url, public_path, workdir, sample_every)
        if feed_mixed:
            ours.feed_mode = "mixed"
        try:
            runs["ordertrack"] = run_scenario(profile, ours, redis_url, redis_proc.pid,
                                              private_pem, progress, script_check, scrape_every)
            extra["artillery"] = (run_artillery(profile, ours, redis_url, private_pem, workdir,
                                                progress)
                                  if with_artillery else
                                  {"skipped": "not in this run (--peers runs it, --no-artillery "
                                              "does not)"})
        finally:
            for proc in ours.procs:
                stop_process(proc)
        chosen, skipped = installed_peers(peers) if with_peers else ({}, {})
        extra["peers_skipped"] = skipped
        for name, spec in chosen.items():
            import redis

            with redis.Redis.from_url(redis_url) as client:
                client.flushall()
            target = start_peer(name, spec, redis_url, workdir)
            connections = target.connections(profile)
            if connections < profile.connections:
                extra["capped"][name] = (
                    f"{connections:,} connections, not {profile.connections:,}: the most "
                    f"{name} holds in one process here (bench/peers/README.md)")
            try:
                runs[name] = run_scenario(profile.scaled(connections), target, redis_url,
                                          redis_proc.pid, private_pem, progress, script_check)
            except RunError as exc:
                logs = [workdir / f"{name}.log", workdir / "nginx" / "error.log"]
                said = " | ".join(line for log in logs if log.exists()
                                  for line in tail(log, 3).splitlines())
                extra["peers_skipped"][name] = (f"peer {name} failed: {exc}"
                                                + (f"; its log ends: {said[-600:]}" if said else ""))
            finally:
                for proc in target.procs:
                    stop_process(proc)
    finally:
        stop_process(redis_proc)
        logs = {p.name: reporting.tail_lines(p) for p in workdir.glob("pod-*.log")}
        shutil.rmtree(workdir, ignore_errors=True)
    report = reporting.build(profile, runs, extra, logs)
    reporting.write(report, runs, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0],
                                     epilog="profiles: " + "; ".join(
                                         f"{p.name}: {p.description}" for p in PROFILES.values()))
    parser.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    parser.add_argument("--out", type=Path, default=None, help="folder (default artifacts/load-<profile>)")
    parser.add_argument("--connections", type=int, default=None, help="override the profile's")
    parser.add_argument("--hold-seconds", type=float, default=None, help="override the profile's")
    parser.add_argument("--peers", default=None,
                        help="comma-separated peers to run too (default: the profile's choice: "
                             "all installed for `pod`, none otherwise); 'none' for none")
    parser.add_argument("--no-artillery", action="store_true",
                        help="do not run Artillery, even with the peers")
    parser.add_argument("--sample-every", type=int, default=SAMPLE_EVERY,
                        help="our pod times every Nth update and probes its loop lag "
                             f"(LATENCY_SAMPLE_EVERY; default {SAMPLE_EVERY}, 0: off)")
    parser.add_argument("--keep-rates", action="store_true",
                        help="with fewer --connections than the profile's, shorten the update, "
                             "heartbeat and ping intervals alike, so updates/s, heartbeats/s "
                             "and pings/s stay the profile's (a reduced-scale run of its rates)")
    parser.add_argument("--ping-interval", type=float, default=None,
                        help="override the profile's pod ping interval (seconds)")
    parser.add_argument("--scrape-every", type=int, default=SCRAPE_EVERY,
                        help="seconds between two scrapes of our pod's /metrics (each holds "
                             f"its GIL ~2-3 ms; default {SCRAPE_EVERY}; 1: every sample)")
    parser.add_argument("--feed-mixed", action="store_true",
                        help="our pod's feeder publishes even orders through the publish Lua "
                             "and odd ones by a bare PUBLISH (no stream, no state: their acks "
                             "and resumes know nothing of them); the report compares the two")
    parser.add_argument("--feeder-script-check", action="store_true",
                        help="the feeder lets redis-py send SCRIPT EXISTS before every batch "
                             "(its default; off: EVALSHA alone, as the gateway sends it)")
    parser.add_argument("--server-cpu", type=int, default=None, metavar="N",
                        help="pin the server under test (our pod, each peer) to CPU N and "
                             "everything else (generator, feeder, Redis) to the other CPUs")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if shutil.which("redis-server") is None:
        print("bench-load: redis-server not found (make system-deps installs it)", file=sys.stderr)
        return 2
    profile = PROFILES[args.profile].scaled(args.connections, args.hold_seconds)
    if profile.connections <= 0 or profile.hold_seconds <= 0:
        parser.error("--connections and --hold-seconds must be positive")
    if args.keep_rates:
        base = PROFILES[args.profile]
        factor = profile.connections / base.connections
        profile = dataclasses.replace(profile, **{
            name: getattr(base, name) * factor
            for name in ("update_interval", "heartbeat_interval", "ping_interval")})
    if args.ping_interval is not None and args.ping_interval <= 0:
        parser.error("--ping-interval must be positive")
    if args.ping_interval is not None:
        profile = dataclasses.replace(profile, ping_interval=args.ping_interval)
    if args.sample_every < 0:
        parser.error("--sample-every must be 0 or more")
    wanted = (None if args.peers == "all" else
              list(profile.peer_names) if args.peers is None and profile.peer_names else
              None if args.peers is None else [p for p in args.peers.split(",") if p])
    with_peers = profile.peers if args.peers is None else args.peers != "none"
    out = args.out or Path("artifacts") / f"load-{profile.name}"

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if args.server_cpu is not None:
        try:
            lib.pin_server({args.server_cpu})
        except ValueError as exc:
            parser.error(str(exc))
    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run(profile, out, wanted, with_peers, progress=not args.quiet,
                     with_artillery=False if args.no_artillery else None,
                     sample_every=args.sample_every, script_check=args.feeder_script_check,
                     scrape_every=args.scrape_every, feed_mixed=args.feed_mixed)
    except (RunError, RuntimeError, TimeoutError) as exc:
        print(f"bench-load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench-load: interrupted", file=sys.stderr)
        return 130
    print((out / "report.md").read_text())
    with contextlib.suppress(KeyError):
        if not all(report["verdict"]["targets"].values()):
            print("bench-load: some targets were missed (see report.md)", file=sys.stderr)
    return 0 if report["verdict"]["ran"] else 1

