"""Where a push pod's bytes per connection go: Python objects by type, allocations by module.

Run: .venv/bin/python -m bench.conn_memory [connections, default 2000]

Starts a private redis-server and one pod (`ordertrack serve` with tracemalloc on, see
`--pod`), takes a snapshot with no connection, opens the connections (bench/loadgen.py: each
its own user and order, authenticated, acked), takes a second snapshot, and prints per
connection: RSS, the Python objects that appeared (count and `sys.getsizeof` bytes by type),
and every traced allocation (Python objects and the PyMem buffers of picows and uvloop) by the
file that made it. What RSS has beyond the traced bytes is malloc'd outside Python's
allocators (libuv handles, OpenSSL-free here) and allocator overhead.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

SNAPSHOT_FILE = "POD_MEMORY_SNAPSHOT"


def _pod() -> int:
    """The pod under tracemalloc; SIGUSR1 writes a snapshot summary to $POD_MEMORY_SNAPSHOT."""
    import tracemalloc

    import uvloop

    from ordertrack.push import main
    from ordertrack.telemetry import setup_logging

    tracemalloc.start(1)

    def dump(signum, frame) -> None:
        gc.collect()
        types = Counter()
        sizes = Counter()
        for obj in gc.get_objects():
            cls = type(obj)
            name = f"{cls.__module__}.{cls.__qualname__}"
            types[name] += 1
            sizes[name] += sys.getsizeof(obj)
        by_file = Counter()
        for stat in tracemalloc.take_snapshot().statistics("filename"):
            by_file[stat.traceback[0].filename] += stat.size
        with open(os.environ[SNAPSHOT_FILE], "w") as out:
            json.dump({"types": types, "sizes": sizes, "by_file": by_file}, out)

    signal.signal(signal.SIGUSR1, dump)
    cfg = main.load_settings()
    setup_logging(cfg.log_level)
    return uvloop.run(main.serve(cfg))


def snapshot(pid: int, path: Path) -> dict:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(600):
        if path.exists() and path.stat().st_size:
            time.sleep(0.2)
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise TimeoutError("no snapshot from the pod")


def per_connection(before: dict, after: dict, n: int, key: str) -> list[tuple[str, float]]:
    diff = {k: (after[key].get(k, 0) - before[key].get(k, 0)) / n for k in after[key]}
    return sorted(((k, v) for k, v in diff.items() if abs(v) >= 1), key=lambda kv: -kv[1])


def main() -> int:
    if sys.argv[1:2] == ["--pod"]:
        return _pod()
    from bench.lib import cli, rss_kb, stack, wait_until
    from bench.loadgen import LoadGenerator

    n = cli(__doc__, connections=2000).connections
    with stack("ordertrack-mem-") as world:
        snap = world.workdir / "snapshot.json"
        os.environ["BENCH_POD_COMMAND"] = f"{sys.executable} -m bench.conn_memory --pod"
        os.environ[SNAPSHOT_FILE] = str(snap)
        pod, port, _ = world.pod(max_connections=n + 100)
        time.sleep(1)
        before, rss_before = snapshot(pod.pid, snap), rss_kb(pod.pid)
        gen = LoadGenerator("127.0.0.1", port, world.keys.private_pem, n)
        try:
            opened = gen.open(n)
            wait_until(lambda: gen.stats()["acks"] >= opened["open"], 60, "acks", interval=0.5)
            time.sleep(1)
            after, rss_after = snapshot(pod.pid, snap), rss_kb(pod.pid)
        finally:
            gen.close()
    held = opened["open"]
    print(f"{held} connections; RSS per connection {(rss_after - rss_before) * 1024 / held:,.0f} B "
          "(with tracemalloc's own overhead)")
    traced = sum(v for _, v in per_connection(before, after, held, "by_file"))
    print(f"\ntraced allocations per connection by file ({traced:,.0f} B in all):")
    for name, size in per_connection(before, after, held, "by_file")[:15]:
        print(f"  {size:8,.0f} B  {name}")
    print("\nPython objects per connection (count, getsizeof bytes):")
    counts = dict(per_connection(before, after, held, "types"))
    for name, size in per_connection(before, after, held, "sizes")[:25]:
        print(f"  {counts.get(name, 0):5.2f} x {name:60s} {size:7,.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
