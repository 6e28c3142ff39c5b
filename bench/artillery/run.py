"""Run Artillery (pinned 2.0.21, `make bench-artillery`) on scenario.yml against one pod and
turn its JSON report into a small summary for the load-test report.

    python -m bench.artillery.run --target ws://127.0.0.1:8080 --payload orders.csv \\
        --rate 50 --duration 20 --hold 60 --out var/artillery

The payload is a CSV of `order_id,token` rows (a header row `order_id,token` is allowed);
virtual user i takes row i. Each user connects at `--rate` new users/s for `--duration` s and
stays `--hold` s (heartbeating every `--heartbeat-seconds`). Updates are not Artillery's job:
the harness publishes them (location `bench:<epoch seconds>`, as bench.capacity does).
Prints the summary as JSON; `run()` returns it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARTILLERY = HERE / "node_modules" / ".bin" / "artillery"
SCENARIO = HERE / "scenario.yml"
PAYLOAD_HEADER = "order_id,token"
#: Artillery's summaries that the report puts beside ours (ms); ours are the ordertrack.* ones
SUMMARIES = {
    "establishment_ms": "ordertrack.establishment_ms",
    "delivery_ms": "ordertrack.delivery_ms",
    "heartbeat_rtt_ms": "ordertrack.heartbeat_rtt_ms",
    "session_length_ms": "vusers.session_length",
}


def installed() -> str | None:
    """None when Artillery can run here, else the one-line reason."""
    if not ARTILLERY.exists():
        return f"{ARTILLERY} missing (run make bench-artillery)"
    return None


def has_header(payload: Path) -> bool:
    with open(payload) as handle:
        return handle.readline().strip().replace(" ", "") == PAYLOAD_HEADER


def think(seconds: float) -> str:
    """A `think` value Artillery reads as `seconds`: it takes a whole number as seconds but
    hands anything else to `ms()`, which reads a bare "2.5" as 2.5 MILLIseconds."""
    return f"{round(seconds * 1000)}ms"


def overrides(rate: float, duration: float, hold: float, heartbeat_seconds: float,
              payload: Path) -> dict[str, Any]:
    """The `--overrides` document: phases, payload and the hold as a number of heartbeats."""
    heartbeats = max(1, math.ceil(hold / heartbeat_seconds))
    return {
        "config": {
            "phases": [{"duration": duration, "arrivalRate": rate, "name": "ramp"}],
            # a list, as Artillery holds it by then (a dict would not replace the file's)
            "payload": [{"path": str(payload.resolve()), "fields": ["order_id", "token"],
                         "order": "sequence", "skipHeader": has_header(payload),
                         "cast": False}],
            "variables": {"heartbeat_think": think(heartbeat_seconds), "heartbeats": heartbeats},
        }
    }


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Artillery's JSON report -> connections, errors and latency p50/p99 as it reports them."""
    aggregate = report.get("aggregate", {})
    counters = aggregate.get("counters", {})
    summaries = aggregate.get("summaries", {})
    errors = {name.removeprefix("errors."): count for name, count in counters.items()
              if name.startswith("errors.")}
    result: dict[str, Any] = {
        "tool": "artillery",
        "vusers_created": counters.get("vusers.created", 0),
        "vusers_completed": counters.get("vusers.completed", 0),
        "vusers_failed": counters.get("vusers.failed", 0),
        "connections_acked": counters.get("ordertrack.acks", 0),
        "no_ack": counters.get("ordertrack.no_ack", 0),
        "updates_received": counters.get("ordertrack.updates", 0),
        "heartbeats_sent": counters.get("websocket.messages_sent", 0),
        "heartbeats_unanswered": counters.get("ordertrack.heartbeat_unanswered", 0),
        "closed_by_server": {name.rsplit(".", 1)[1]: count for name, count in counters.items()
                             if name.startswith("ordertrack.closed_by_server.")},
        "errors": errors,
        "errors_total": sum(errors.values()),
    }
    for key, name in SUMMARIES.items():
        summary = summaries.get(name)
        result[key] = None if summary is None else {
            "count": summary.get("count"), "p50": summary.get("p50"), "p99": summary.get("p99"),
            "max": summary.get("max")}
    return result


def run(target: str, payload: Path, rate: float, duration: float, hold: float,
        heartbeat_seconds: float, out: Path) -> dict[str, Any]:
    missing = installed()
    if missing:
        raise RuntimeError(f"artillery is not installed: {missing}")
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "artillery-report.json"
    command = [str(ARTILLERY), "run", "--quiet", "--target", target,
               "--overrides", json.dumps(overrides(rate, duration, hold, heartbeat_seconds, payload)),
               "--output", str(report_path), str(SCENARIO)]
    env = dict(os.environ, ARTILLERY_DISABLE_TELEMETRY="true")
    with open(out / "artillery.log", "wb") as log:
        completed = subprocess.run(command, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0 or not report_path.exists():
        tail = (out / "artillery.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"artillery exited with {completed.returncode}:\n{tail}")
    summary = summarize(json.loads(report_path.read_text()))
    (out / "artillery-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--target", required=True, help="the pod, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--payload", type=Path, required=True, help="CSV of order_id,token")
    parser.add_argument("--rate", type=float, default=10, help="new connections per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of arrivals")
    parser.add_argument("--hold", type=float, default=50, help="seconds each connection stays")
    parser.add_argument("--heartbeat-seconds", type=float, default=25)
    parser.add_argument("--out", type=Path, default=Path("var/artillery"))
    args = parser.parse_args(argv)
    if not args.payload.is_file():
        parser.error(f"no payload file {args.payload}")
    try:
        summary = run(args.target, args.payload, args.rate, args.duration, args.hold,
                      args.heartbeat_seconds, args.out)
    except RuntimeError as exc:
        print(json.dumps({"event": "artillery_failed", "message": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
