"""The pod's CPU per admitted connection over one ramp: TCP accept, upgrade, token, admission
batch, `connection_ack` (issue 18's before/after: which tree's pod runs is PYTHONPATH's).

    PYTHONPATH=<tree>/src python -m bench.admission_cpu [CONNECTIONS]   (default 10000)

One pod on the local Redis (REDIS_URL, default redis://127.0.0.1:6379/0), the load generator's
processes opening CONNECTIONS authenticated connections as fast as they can; prints the time the
ramp took and the pod's CPU (user + system) per connection. To see where it goes, attach
`py-spy record -p <pod pid>` (printed) during the ramp.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import cpu_seconds, generate_key_pair, start_pod
from bench.loadgen import LoadGenerator
from ordertrack.devtools.processes import stop_process


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    connections = int(args[0]) if args else 10_000
    workdir = Path(tempfile.mkdtemp(prefix="bench-admission-cpu-"))
    private_pem, public_path = generate_key_pair(workdir)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    pod, port, _ = start_pod(redis_url, public_path, connections + 100, 30.0, workdir / "pod.log")
    gen = LoadGenerator("127.0.0.1", port, private_pem, connections)
    try:
        print(f"pod pid {pod.pid} (PYTHONPATH={os.environ.get('PYTHONPATH', '')})", flush=True)
        started, cpu = time.monotonic(), cpu_seconds(pod.pid)
        opened = gen.open(connections)["open"]
        elapsed, used = time.monotonic() - started, cpu_seconds(pod.pid) - cpu
        print(f"{opened} of {connections} connections acked in {elapsed:.1f} s; pod CPU "
              f"{used:.2f} s: {used / max(1, opened) * 1e6:.0f} us per connection")
    finally:
        gen.close()
        stop_process(pod)
    return 0


if __name__ == "__main__":
    sys.exit(main())
