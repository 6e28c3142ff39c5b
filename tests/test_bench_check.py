"""`make bench-check`'s verdicts (bench/instructions/runner.py): what fails, what passes, and
when a baseline is refused. The counting itself runs under valgrind in `make bench-check`."""

from __future__ import annotations

from bench.instructions.runner import compare, differences, read_dumps, table

BASE = {"reader[cython]": {"instructions": 1_000_000, "per": 200, "unit": "message"},
        "wheel[cython]": {"instructions": 2_000_000, "per": 1000, "unit": "timer"}}


def now(reader: int, wheel: int) -> dict:
    return {"reader[cython]": {**BASE["reader[cython]"], "instructions": reader},
            "wheel[cython]": {**BASE["wheel[cython]"], "instructions": wheel}}


def test_more_than_the_threshold_fails_and_names_the_benchmark():
    rows, failed = compare(BASE, now(1_031_000, 2_000_000), 3.0, None)
    assert failed
    verdicts = {name: verdict for name, *_, verdict in rows}
    assert verdicts == {"reader[cython]": "FAIL: more than +3 %", "wheel[cython]": "ok"}
    printed = table(rows, now(1_031_000, 2_000_000))
    assert "reader[cython]" in printed and "+3.10 %" in printed and "1,000,000" in printed


def test_within_the_threshold_or_faster_passes():
    rows, failed = compare(BASE, now(1_029_000, 1_900_000), 3.0, None)
    assert not failed
    assert [r[4] for r in rows] == ["ok", "faster: re-baseline to keep it"]


def test_the_threshold_is_a_setting():
    assert compare(BASE, now(1_015_000, 2_000_000), 1.0, None)[1]
    assert not compare(BASE, now(1_015_000, 2_000_000), 3.0, None)[1]


def test_a_benchmark_gone_from_the_run_fails_a_new_one_does_not():
    gone = {"reader[cython]": now(1_000_000, 0)["reader[cython]"]}
    assert compare(BASE, gone, 3.0, None)[1]
    added = {**now(1_000_000, 2_000_000), "new_part": {"instructions": 5, "per": 1, "unit": "call"}}
    rows, failed = compare(BASE, added, 3.0, None)
    assert not failed and rows[-1][4] == "new: no baseline"


def test_a_baseline_from_other_versions_is_refused_with_what_differs():
    env = {"python": "3.11.7 CPython", "valgrind": "valgrind-3.19.0",
           "libraries": {"Cython": "3.3.1", "orjson": "3.13.0"}}
    old = {**env, "libraries": {"Cython": "3.2.0", "orjson": "3.13.0"}}
    assert differences(env, env) == []
    assert differences(old, env) == ["Cython: baseline 3.2.0, now 3.3.1"]
    assert differences({**env, "valgrind": "valgrind-3.22.0"}, env) == [
        "valgrind: baseline 'valgrind-3.22.0', now 'valgrind-3.19.0'"]


def test_callgrind_dumps_are_read_by_their_client_request_name(tmp_path):
    (tmp_path / "callgrind.out.1").write_text(
        "version: 1\ncreator: callgrind-3.19.0\ndesc: Trigger: Client Request: message_rule#0\n"
        "events: Ir\nfn=(1) f\n0 5\ntotals: 1745378\n")
    (tmp_path / "callgrind.out.2").write_text(
        "desc: Trigger: Program termination\nevents: Ir\nsummary: 99\n")
    assert read_dumps(tmp_path) == {"message_rule#0": 1745378}
