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
