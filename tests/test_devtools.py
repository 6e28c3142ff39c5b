"""Dev tooling stays out of production: the processes never load it, bench/ needs no tests/."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support import REPO

PRODUCTION = {"serve": "ordertrack.push.main", "poll": "ordertrack.gateway.main",
              "api": "ordertrack.api.main"}


@pytest.mark.parametrize("command", sorted(PRODUCTION))
def test_a_production_process_imports_no_dev_tooling(command):
    """What `ordertrack serve|poll|api` loads to build its command line and start."""
    script = f"""
import sys
from ordertrack import cli
cli.build_parser({command!r})
import {PRODUCTION[command]}
print(sorted(m for m in sys.modules if m.startswith("ordertrack.devtools")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bench_imports_nothing_from_tests():
    offenders = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in names
                          if name == "tests" or name.startswith("tests.")]
    assert offenders == []
