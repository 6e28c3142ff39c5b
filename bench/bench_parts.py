"""Wall time of the deterministic hot-part benchmarks (bench/instructions/cases.py), for humans.

Run: .venv/bin/python -m pytest bench/bench_parts.py --benchmark-enable (part of `make bench`)

The same bodies are counted in instructions by `make bench-check` (bench/instructions/
runner.py): that count gates; these times inform (the 2-vCPU machine's runs differ by up to
1.6x). `extra_info` has the time per unit (message, token, connection, timer, answer).
"""

from __future__ import annotations

import pytest

from bench.instructions.cases import cases

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_part(benchmark, case):
    body = case.make()
    benchmark(body)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info[f"us_per_{case.unit}"] = round(benchmark.stats.stats.min / case.per * 1e6, 3)
