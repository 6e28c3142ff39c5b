"""Once a second: RSS and CPU of each pod and of redis-server (from /proc), Redis INFO
(memory, CPU, network bytes, commands); each pod's active-connections gauge every
`scrape_every` samples.

A scrape is not free for the pod: prometheus_client renders /metrics in a thread of the pod's
process, holding the GIL for ~2-3 ms, during which the pod's event loop waits (issue 23: at one
scrape a second that was our delivery tail's largest part, and the peers have no /metrics to
scrape). Production scrapes every 15-30 s; the load test every SCRAPE_EVERY s by default."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.lib import cpu_seconds, metric_sum, rss_kb, scrape

ACTIVE = "ordertrack_ws_active_connections"
#: samples between two scrapes of a pod's /metrics (the samples are a second apart)
SCRAPE_EVERY = 10


@dataclass
class Watched:
    name: str
    pid: int
    metrics_port: int = 0  # 0: no /metrics (peers)


def redis_info(client: Any) -> dict[str, float]:
    info = client.info("all")
    return {
        "used_memory": float(info["used_memory"]),
        "cpu_seconds": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "net_in": float(info["total_net_input_bytes"]),
        "net_out": float(info["total_net_output_bytes"]),
        "commands": float(info["total_commands_processed"]),
    }


def runqueue_seconds(pid: int) -> float | None:
    """Seconds the process's main thread (the event loop's) has spent runnable but waiting for
    a CPU (/proc/PID/schedstat, second field): the machine's share of its latency."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class Sampler(threading.Thread):
    def __init__(self, pods: list[Watched], redis_pid: int, redis_url: str, every: float = 1.0,
                 scrape_every: int = SCRAPE_EVERY):
        super().__init__(name="load-sampler", daemon=True)
        import redis

        self.pods = pods
        self.redis_pid = redis_pid
        self.client = redis.Redis.from_url(redis_url)
        self.every = every
        self.scrape_every = max(1, scrape_every)
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": time.time(), "pods": {}}
        for pod in self.pods:
            entry: dict[str, Any] = {}
            try:
                entry["rss_kb"] = rss_kb(pod.pid)
                entry["cpu_s"] = cpu_seconds(pod.pid)
                entry["runq_s"] = runqueue_seconds(pod.pid)
            except (OSError, RuntimeError):  # it died (a zombie has no VmRSS): the run says so
                continue
            if pod.metrics_port and len(self.samples) % self.scrape_every == 0:
                entry["scraped_at"] = time.time()
                entry["active"] = metric_sum(scrape(pod.metrics_port), ACTIVE)
            row["pods"][pod.name] = entry
        try:
            row["redis"] = {"rss_kb": rss_kb(self.redis_pid), "cpu_s": cpu_seconds(self.redis_pid),
                            **redis_info(self.client)}
        except Exception:  # noqa: BLE001 - a missed sample, not a failed run
            pass
        return row

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.every)

    def stop(self) -> list[dict[str, Any]]:
        self._halt.set()
        self.join(timeout=5)
        self.client.close()
        return self.samples


def window(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["t"] <= end]


def cpu_percent(samples: list[dict[str, Any]], get) -> float | None:
    """Mean CPU (% of one core) over the samples, `get(sample)` giving cumulative CPU seconds."""
    points = [(s["t"], get(s)) for s in samples if get(s) is not None]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return 100.0 * (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def delta(samples: list[dict[str, Any]], get) -> tuple[float, float] | None:
    """(change of `get`, seconds) between the first and last sample that have it."""
    points = [(s["t"], get(s)) for s in samples if get(s) is not None]
    if len(points) < 2:
        return None
    return points[-1][1] - points[0][1], points[-1][0] - points[0][0]
