"""`make bench-load PROFILE=storm` at a small scale (issue 23): every connection is cut and comes
back with `?last_seq`, and the report says when all were back and what was lost; the tail
table splits each delivery into stages, the pod's from its LATENCY_SAMPLE_EVERY probe. Figures
are printed, not asserted (the machine is shared); what is asserted is what a reader of the
report relies on: every connection counted, nothing lost or twice, the stages present."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_storm_profile_brings_every_connection_back_and_loses_nothing(tmp_path):
    out = tmp_path / "storm"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.load", "--profile", "storm", "--connections", "300",
         "--hold-seconds", "9", "--peers", "none", "--out", str(out), "--quiet",
         "--sample-every", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=200,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    ours = report["results"]["ordertrack"]
    storm = ours["storm"]
    # 9 s hold: the storm keeps its place (20 s of 60), so it begins 3 s in
    assert report["profile"]["storm_at"] == 3.0
    assert storm["cut"] == storm["back"] == 300 and storm["not_back"] == 0, storm
    assert storm["all_back_seconds"] is not None and storm["establish"]["count"] == 300
    # resumed with ?last_seq: every published update arrived, once
    assert ours["delivery"]["published"] > 0
    assert ours["lost_updates"] == 0 and ours["delivery"]["duplicates"] == 0, ours["delivery"]
    # the pod's sampled stages and loop lag over the hold, every update timed
    (stages,) = ours["pod_probe"].values()
    assert {"redis_to_read", "fanout", "loop_lag"} <= set(stages)
    assert stages["fanout"]["count"] > 0 and stages["loop_lag"]["count"] > 0
    assert ours["generator_loop_lag"]["count"] > 0
    # every first connection's establishment, split at the 101
    assert ours["establish_upgrade"]["count"] == ours["establish_admission"]["count"] == 300
    markdown = (out / "report.md").read_text()
    assert "## The storm: every connection cut and back within 1.0 s" in markdown
    assert "| pod: read -> frames written (sampled) |" in markdown


def test_probe_histogram_lines_give_per_stage_percentiles_over_the_hold():
    """The report reads the pod's probe histogram at the hold's start and end: the difference,
    interpolated within a bucket as Prometheus' histogram_quantile does."""
    from bench.load.report import bucket_quantile, pod_probe, probe_buckets

    def lines(fanout: list[float]) -> list[str]:
        les = ("0.001", "0.002", "+Inf")
        return [f'ordertrack_ws_latency_probe_seconds_bucket{{le="{le}",stage="fanout"}} {n}'
                for le, n in zip(les, fanout, strict=True)] + [
            "ordertrack_ws_latency_probe_seconds_count{stage=\"fanout\"} 0"]

    assert probe_buckets(lines([1, 3, 4]))["fanout"][-1][1] == 4
    # 100 observations in the hold: 90 below 1 ms, 10 in 1-2 ms; before it, 5 below 1 ms
    hold = pod_probe({"pod-0": {"hold_start": lines([5, 5, 5]), "hold_end": lines([95, 105, 105])}})
    fanout = hold["pod-0"]["fanout"]
    assert fanout["count"] == 100
    assert abs(fanout["p50_ms"] - 0.5 * 50 / 90 * 2) < 1e-9  # within the first bucket
    assert abs(fanout["p99_ms"] - (1.0 + 0.9)) < 1e-9  # 9 of the 10 in 1-2 ms
    assert bucket_quantile([(0.001, 0), (float("inf"), 0)], 0.99) is None


def test_storm_spreads_the_cuts_over_its_second_and_keeps_its_place_when_scaled():
    from bench.load.profiles import PROFILES, storm_offset

    storm = PROFILES["storm"]
    assert storm.connections == 19_500 and storm.storm_seconds == 1.0
    offsets = [storm_offset(i, storm.connections, storm.storm_seconds)
               for i in range(storm.connections)]
    assert offsets[0] == 0.0 and max(offsets) < 1.0 and offsets == sorted(offsets)
    scaled = storm.scaled(connections=2_000, hold_seconds=30)
    assert scaled.storm_at == 10.0 and scaled.hold_seconds == 30
    assert storm.scaled(connections=2_000).storm_at == storm.storm_at
