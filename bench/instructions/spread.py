"""The spread of each benchmark's instruction count over saved `make bench-check` outputs.

    python -m bench.instructions.spread run-*.txt

For BENCHMARKS.md's repeatability proof: per benchmark the runs' min, max and (max-min)/min,
and how many runs failed (a false alarm on an unchanged tree).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROW = re.compile(r"^(\S+)\s+([\d,]+)\s+([\d,]+)\s+[+-][\d.]+ %")


def main(paths: list[str]) -> int:
    counts: dict[str, list[int]] = {}
    runs = failed = 0
    for path in paths:
        text = Path(path).read_text()
        if "bench-check:" not in text:
            continue  # a run still going
        runs += 1
        failed += "FAILED" in text
        for line in text.splitlines():
            m = ROW.match(line)
            if m:
                counts.setdefault(m.group(1), []).append(int(m.group(3).replace(",", "")))
    print(f"{'benchmark':32} {'runs':>4} {'min':>12} {'max':>12} {'spread':>8}")
    worst = 0.0
    for name, values in counts.items():
        spread = (max(values) - min(values)) / min(values) * 100
        worst = max(worst, spread)
        print(f"{name:32} {len(values):>4} {min(values):>12,} {max(values):>12,} {spread:>7.3f}%")
    print(f"{runs} runs, {failed} failed; the largest spread {worst:.3f} %")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", help="saved outputs of `make bench-check`")
    sys.exit(main(parser.parse_args().paths))
