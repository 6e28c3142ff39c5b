"""Instruction counts of the hot parts (bench/instructions/cases.py) under callgrind, compared
with bench/baseline/instructions.json: `make bench-check`, `make bench-baseline`.

    python -m bench.instructions.runner             # check: exit 1 past the threshold
    python -m bench.instructions.runner --save      # store a new baseline
    options: --threshold PCT (BENCH_CHECK_THRESHOLD, default 3), --only SUBSTRING, --json FILE

How: this process starts ONE `valgrind --tool=callgrind --collect-atstart=no
--instr-atstart=no` child running `--inner`. The child builds every case uninstrumented
(fast), warms it up, switches instrumentation on, and around each measured round calls
callgrind's client requests (callgrind_hooks.c, compiled here, loaded with ctypes): zero the
counters and start collecting, `calls` calls of the body, stop and dump the counts under the
round's name. The same loop around an empty body is dumped too and subtracted, so a figure is
the body's own instructions per call. The child gets a fixed minimal environment with a fixed
PYTHONHASHSEED; the objects that exist before a case are frozen out of the cyclic GC and each
round starts after a collection; the figure is the median of ROUNDS rounds.

The baseline records what the counts depend on (Python, Cython, valgrind, the libraries the
hot parts run through, glibc, the host CPU's features, which OpenSSL and glibc
pick code paths by): a check against a baseline taken with anything else refuses to compare
(exit 2) and says what differs; `make bench-baseline` is then the deliberate answer.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent
BASELINE = REPO / "bench" / "baseline" / "instructions.json"
HOOKS_SOURCE = HERE / "callgrind_hooks.c"
HOOKS_LIBRARY = REPO / "build" / "bench-instructions" / "callgrind_hooks.so"
ROUNDS = 3
HASH_SEED = "0"
DEFAULT_THRESHOLD = 3.0
#: the distributions the measured code runs through (a new version changes the counts)
LIBRARIES = ("Cython", "cryptography", "orjson", "picows", "redis", "hiredis", "PyJWT", "uvloop")
#: CPU features OpenSSL and glibc choose code paths by (/proc/cpuinfo)
CPU_FEATURES = ("sse4_2", "avx", "avx2", "bmi1", "bmi2", "adx", "aes", "pclmulqdq", "sha_ni",
                "movbe", "erms")


# --- the child, under valgrind --------------------------------------------------------------------

def inner(only: str | None, out: Path) -> None:
    import ctypes

    from bench.instructions.cases import cases

    hooks = ctypes.CDLL(str(HOOKS_LIBRARY))
    if not hooks.ot_on_valgrind():
        raise SystemExit("--inner runs under valgrind (python -m bench.instructions.runner)")
    begin, end, instrument = hooks.ot_begin, hooks.ot_end, hooks.ot_instrument
    end.argtypes = [ctypes.c_char_p]

    def measure(label: bytes, body, calls: int) -> None:
        begin()
        for _ in range(calls):
            body()
        end(label)

    def empty() -> None:
        return None

    selected = [c for c in cases() if only is None or only in c.name]
    meta = []
    for case in selected:
        body = case.make()
        for _ in range(case.calls + 3):  # warm up: quickening, free lists, caches
            body()
        gc.collect()
        gc.freeze()  # what exists now is never scanned: collections cost the same in any run
        instrument(1)
        gc.collect()
        measure(f"{case.name}#empty".encode(), empty, case.calls)
        for r in range(ROUNDS):
            gc.collect()  # each round starts from the same collector state
            measure(f"{case.name}#{r}".encode(), body, case.calls)
        instrument(0)
        gc.unfreeze()
        meta.append({"name": case.name, "calls": case.calls, "per": case.per, "unit": case.unit})
    out.write_text(json.dumps(meta))


# --- the parent --------------------------------------------------------------------------------

def build_hooks() -> Path:
    if (not HOOKS_LIBRARY.exists()
            or HOOKS_LIBRARY.stat().st_mtime < HOOKS_SOURCE.stat().st_mtime):
        HOOKS_LIBRARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o",
                        str(HOOKS_LIBRARY), str(HOOKS_SOURCE)], check=True)
    return HOOKS_LIBRARY


def valgrind_version() -> str:
    return subprocess.run(["valgrind", "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def cpu_features() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    return [f for f in CPU_FEATURES if f in flags]


def environment() -> dict:
    """What the counts depend on besides our code (see the module docstring)."""
    import cryptography.hazmat.backends.openssl as openssl

    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    return {
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "valgrind": valgrind_version(),
        "libraries": libraries,
        "openssl": openssl.backend.openssl_version_text(),
        "glibc": " ".join(platform.libc_ver()),
        "machine": platform.machine(),
        "cpu_features": cpu_features(),
    }


def child_environment() -> dict[str, str]:
    """A fixed, minimal environment: the process's environment block sits at the top of the
    stack, and its size moves where everything after it lands (about 0.5 % on some counts).
    ORDERTRACK_PURE_PYTHON is left out: both implementations are measured anyway."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
           "PYTHONHASHSEED": HASH_SEED, "PYTHONDONTWRITEBYTECODE": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_callgrind(only: str | None) -> dict[str, dict]:
    """{case name: {"instructions": per call, "per", "unit", "rounds": [per call...]}}."""
    build_hooks()
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        work = Path(tmp)
        meta_file = work / "cases.json"
        env = child_environment()
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
               f"--callgrind-out-file={work}/callgrind.out", f"--log-file={work}/valgrind.log",
               sys.executable, "-m", "bench.instructions.runner", "--inner",
               "--meta", str(meta_file)]
        if only:
            cmd += ["--only", only]
        proc = subprocess.run(cmd, cwd=REPO, env=env)
        if proc.returncode != 0:
            log = (work / "valgrind.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the callgrind run failed (exit {proc.returncode}):\n{log}")
        totals = read_dumps(work)
        results = {}
        for case in json.loads(meta_file.read_text()):
            name, calls = case["name"], case["calls"]
            empty = totals[f"{name}#empty"]
            rounds = [(totals[f"{name}#{r}"] - empty) / calls for r in range(ROUNDS)]
            results[name] = {"instructions": round(sorted(rounds)[len(rounds) // 2]),
                             "per": case["per"], "unit": case["unit"],
                             "rounds": [round(x) for x in rounds]}
        return results


def read_dumps(work: Path) -> dict[str, int]:
    """{dump name: instructions} from callgrind's dump files (`desc: Trigger: Client Request:
    NAME`, `totals: N` or `summary: N`)."""
    totals = {}
    for path in work.glob("callgrind.out*"):
        name = total = None
        with path.open(errors="replace") as f:
            for line in f:
                if line.startswith("desc: Trigger: Client Request: "):
                    name = line.split(": ", 3)[-1].strip()
                elif line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
        if name is not None and total is not None:
            totals[name] = total
    return totals


# --- compare, print, save ------------------------------------------------------------------------

def differences(baseline_env: dict, env: dict) -> list[str]:
    out = []
    for key in sorted(set(baseline_env) | set(env)):
        a, b = baseline_env.get(key), env.get(key)
        if key == "libraries" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{lib}: baseline {a.get(lib)}, now {b.get(lib)}"
                    for lib in sorted(set(a) | set(b)) if a.get(lib) != b.get(lib)]
        elif a != b:
            out.append(f"{key}: baseline {a!r}, now {b!r}")
    return out


def compare(baseline: dict, now: dict, threshold: float, only: str | None) -> tuple[list, bool]:
    rows, failed = [], False
    names = [n for n in baseline if only is None or only in n]
    names += [n for n in now if n not in baseline]
    for name in names:
        base = baseline.get(name, {}).get("instructions")
        cur = now.get(name, {}).get("instructions")
        if base is None:
            rows.append((name, None, cur, None, "new: no baseline"))
        elif cur is None:
            rows.append((name, base, None, None, "FAIL: not measured"))
            failed = True
        else:
            change = (cur - base) / base * 100
            verdict = "ok"
            if change > threshold:
                verdict, failed = f"FAIL: more than +{threshold:g} %", True
            elif change < -threshold:
                verdict = "faster: re-baseline to keep it"
            rows.append((name, base, cur, change, verdict))
    return rows, failed


def table(rows: list, now: dict) -> str:
    head = ("benchmark", "baseline", "now", "change", "now per unit", "verdict")
    lines = []
    for name, base, cur, change, verdict in rows:
        case = now.get(name)
        unit = f"{cur / case['per']:,.0f}/{case['unit']}" if case and cur is not None else ""
        lines.append((name, f"{base:,}" if base is not None else "-",
                      f"{cur:,}" if cur is not None else "-",
                      f"{change:+.2f} %" if change is not None else "-", unit, verdict))
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i in (0, 5) else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), *(fmt.format(*r) for r in lines)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help="store a new baseline")
    parser.add_argument("--threshold", type=float,
                        default=float(os.environ.get("BENCH_CHECK_THRESHOLD", DEFAULT_THRESHOLD)),
                        help="percent more instructions that fails (default 3)")
    parser.add_argument("--only", help="only the benchmarks whose name contains this")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--json", type=Path, help="also write this run's counts here")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--meta", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner(args.only, args.meta)
        return 0

    if shutil.which("valgrind") is None:
        print("bench-check: valgrind is not installed (Debian: apt-get install valgrind)",
              file=sys.stderr)
        return 2
    env = environment()
    baseline = None
    if not args.save:
        if not args.baseline.exists():
            print(f"bench-check: no baseline at {args.baseline}: `make bench-baseline` stores one",
                  file=sys.stderr)
            return 2
        baseline = json.loads(args.baseline.read_text())
        diff = differences(baseline["environment"], env)
        if diff:
            print("bench-check: REFUSED: the baseline was taken with other versions, so its "
                  "instruction counts are not comparable:\n  " + "\n  ".join(diff)
                  + "\nIf the change is deliberate, `make bench-baseline` stores a new baseline "
                  "(commit it with the change).", file=sys.stderr)
            return 2

    started = time.monotonic()
    now = run_callgrind(args.only)
    seconds = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "benchmarks": now}, indent=1))

    if args.save:
        if args.only and args.baseline.exists():  # a partial save keeps the other entries
            old = json.loads(args.baseline.read_text())["benchmarks"]
            now = {**old, **now}
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        args.baseline.write_text(json.dumps(
            {"environment": env, "hash_seed": HASH_SEED, "rounds": ROUNDS,
             "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "benchmarks": now}, indent=1) + "\n")
        rows = [(n, None, v["instructions"], None, "saved") for n, v in now.items()]
        print(table(rows, now))
        print(f"bench-baseline: {len(now)} benchmarks stored in {args.baseline} ({seconds:.0f} s)")
        return 0

    rows, failed = compare(baseline["benchmarks"], now, args.threshold, args.only)
    print(table(rows, now))
    worse = [r[0] for r in rows if r[4].startswith("FAIL")]
    if failed:
        print(f"bench-check: FAILED ({seconds:.0f} s): " + ", ".join(worse), file=sys.stderr)
        return 1
    print(f"bench-check: {len(rows)} benchmarks within +{args.threshold:g} % of the baseline "
          f"({seconds:.0f} s; instructions per call, callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
