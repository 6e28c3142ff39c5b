"""Child processes for development: free ports, waiting, the supervisor of `ordertrack dev`,
and `ProcessGroup` for the tests' and benches' `python -m ordertrack` children."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STABLE_SECONDS = 30.0
MAX_RESTART_DELAY = 10.0

#: how to run `ordertrack` as a child of this interpreter
ORDERTRACK = (sys.executable, "-m", "ordertrack")


# --- ports and waiting ---------------------------------------------------------------------


#: "LO-HI": free_port() hands out ports of this range only. Several test runners at once (the
#: suite's pytest-xdist workers) each get a range of their own, so two of them can never pick
#: the same port between one's choice and its process's bind (the kernel's bind(0) can return
#: a port another worker was just given). Unset: the kernel's choice.
PORT_RANGE_ENV = "ORDERTRACK_FREE_PORTS"
_next_port: list[int] = []


def free_port() -> int:
    """A loopback TCP port nothing listens on now (from ORDERTRACK_FREE_PORTS if set)."""
    spec = os.environ.get(PORT_RANGE_ENV)
    if not spec:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    low, high = (int(part) for part in spec.split("-"))
    if not _next_port:  # a random start: a child process with the same range goes elsewhere
        _next_port.append(low + int.from_bytes(os.urandom(2), "big") % (high - low))
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = low + (port + 1 - low) % (high - low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"{PORT_RANGE_ENV}={spec}: no free port left")


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Call `predicate` until it returns something true (returned) or `timeout` passes
    (TimeoutError naming `what` and the last exception the predicate raised)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_exc!r})")


def wait_http_ok(url: str, timeout: float = 15.0) -> None:
    import httpx

    wait_for(lambda: httpx.get(url, timeout=1.0).status_code == 200, timeout, what=url)


async def wait_for_async(predicate: Callable[[], Any], timeout: float = 10.0,
                         interval: float = 0.05, what: str = "condition") -> Any:
    """`wait_for` for a coroutine: the loop keeps running while it waits. A plain predicate
    (a file read, a sync HTTP or Redis call) runs on a worker thread, so it never blocks the
    loop that runs the caller's own clients; a predicate may also return an awaitable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_exc = None
    while True:
        try:
            if inspect.iscoroutinefunction(predicate):
                result = predicate()
            else:
                result = await asyncio.to_thread(predicate)
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out waiting for {what} (last error: {last_exc!r})")
        await asyncio.sleep(interval)


async def wait_http_ok_async(url: str, timeout: float = 15.0) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=1.0) as client:
        async def ok() -> bool:
            return (await client.get(url)).status_code == 200
        await wait_for_async(ok, timeout, what=url)


def wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    """Until `proc` listens on `port`; RuntimeError if it exits first or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} {describe_exit(proc.returncode)} while starting")
        if port_busy(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")


async def wait_port_async(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    """`wait_port` for a coroutine (the loop keeps running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} {describe_exit(proc.returncode)} while starting")
        if port_busy(port):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")


# --- stopping -----------------------------------------------------------------------------


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM,
                 timeout: float = 15) -> int | None:
    """Send `sig`, wait up to `timeout`, then SIGKILL; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGTERM this child when `parent_pid` dies, even by SIGKILL."""
    def arm() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


# --- the supervisor of `ordertrack dev` ----------------------------------------------------


def restart_delay(failures: int) -> float:
    """Seconds before restarting a child that exited `failures` times in a row without
    running `STABLE_SECONDS`: 0.5 s after a crash of a stable child, doubling up to 10 s."""
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, failures))


def say(text: str) -> None:
    """Print a line. When stdout is gone (`make run | tee run.log` after Ctrl-C: tee dies first),
    stdout is pointed at stderr, else at /dev/null, so no write error stops the cleanup."""
    for fallback in (lambda: sys.stderr.fileno(), lambda: os.open(os.devnull, os.O_WRONLY)):
        try:
            print(text, flush=True)
            return
        except (OSError, ValueError):
            try:
                os.dup2(fallback(), sys.stdout.fileno())
            except (OSError, ValueError):
                pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    #: exits in a row that came before STABLE_SECONDS of running
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts child processes, restarts the ones that die, and stops them all, in reverse.
    Each child logs to `log_dir/<name>.log` and gets SIGTERM if the supervisor dies."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _spawn(self, child: Child) -> subprocess.Popen:
        with open(self.log_path(child.name), "ab") as log:
            child.proc = subprocess.Popen(
                child.argv, env={**os.environ, **child.env}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with(os.getpid()))
        child.started_at = time.monotonic()
        child.restart_at = None
        return child.proc

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        child = Child(name, argv, env)
        self.children.append(child)
        return self._spawn(child)

    def pids(self) -> str:
        return ", ".join(f"{c.name} {c.proc.pid}" for c in self.children if c.proc is not None)

    def exited(self) -> tuple[str, int] | None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return child.name, child.proc.returncode
        return None

    def tend(self) -> None:
        """Schedule a restart for each child that died; restart those whose delay is over."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    proc = self._spawn(child)
                    say(f"{child.name} restarted (pid {proc.pid})")
                continue
            code = child.proc.poll() if child.proc is not None else None
            if code is None:
                continue
            stable = now - child.started_at >= STABLE_SECONDS
            child.failures = 0 if stable else child.failures + 1
            delay = restart_delay(child.failures)
            child.restart_at = now + delay
            say(f"{child.name} {describe_exit(code)}; restarting it in {delay:g}s "
                f"(log: {self.log_path(child.name)})")

    def stop_all(self) -> None:
        running = [c.proc for c in reversed(self.children)
                   if c.proc is not None and c.proc.poll() is None]
        for each in running:
            each.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            proc = child.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"  {child.name} did not stop in time: killing it")
                proc.kill()
                proc.wait()
        self.children.clear()


# --- the tests' and benches' children ------------------------------------------------------


class ProcessGroup:
    """Starts `python -m ordertrack ...` processes (in `cwd`) and always stops them."""

    #: where the children run; None: this process's current directory
    cwd: Path | None = None

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None,
              **popen) -> subprocess.Popen:
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [*ORDERTRACK, *args], env=full_env, stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            cwd=popen.pop("cwd", self.cwd), **popen)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM,
             timeout: float = 15) -> int | None:
        return stop_process(proc, sig, timeout)

    def stop_all(self) -> None:
        """Kill every child still running. Under coverage.py (`make coverage`) they get SIGTERM
        first and a few seconds, so each saves what it measured."""
        if "coverage" in sys.modules:
            running = [proc for proc in self.procs if proc.poll() is None]
            for proc in running:
                proc.terminate()
            deadline = time.monotonic() + 5
            for proc in running:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
