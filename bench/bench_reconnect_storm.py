"""A reconnect storm against one push pod: do the kernel's listen queues drop handshakes?

Run: .venv/bin/python -m bench.bench_reconnect_storm [--clients 8000] [--workers 4]
     [--backlog N (the pod's LISTEN_BACKLOG; default: its own default)]
     [--somaxconn N (run in a private network namespace with net.core.somaxconn N, as the
      deploy manifests set it for the pod; needs root: `unshare -n`)]
     [--pod-pythonpath DIR (the pod's PYTHONPATH: another tree's src, for a before/after)]

A private redis-server and one `ordertrack serve`; then `--clients` raw WebSocket clients
(`--workers` processes; each starts its share's TCP connects in one tight loop, so the SYNs
arrive within milliseconds as from clients on many machines) upgrade with a token of their own
and wait for their `connection_ack`, as after a pod restart. Reads the kernel's
`TcpExt: ListenOverflows` and `ListenDrops` (/proc/net/netstat, per network namespace: in a
private one nothing else on the machine adds to them) before and after, and prints one
markdown row: overflows, drops, clients acked, and the time until the last ack.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jwt
import uvloop

from bench.lib import REPO, markdown, stack, upgrade_request
from ordertrack.devtools.keys import token_claims

IN_NAMESPACE = "ORDERTRACK_BENCH_NETNS"


def tcp_ext() -> dict[str, int]:
    """/proc/net/netstat's TcpExt counters."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def start_connects(port: int, count: int) -> list[socket.socket]:
    """`count` non-blocking connects, started in a tight loop: the SYNs of a storm arrive
    within milliseconds, as from clients on many machines (not paced by this process)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


async def one_client(sock: socket.socket, token: str, order_id: str, timeout: float,
                     started: float) -> float | str:
    """Seconds from the SYN to `connection_ack`, or why it never came."""
    loop = asyncio.get_running_loop()
    try:
        connected = loop.create_future()
        loop.add_writer(sock.fileno(), lambda: connected.done() or connected.set_result(None))
        try:
            await asyncio.wait_for(connected, timeout)
        finally:
            loop.remove_writer(sock.fileno())
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            return f"connect: {os.strerror(error)}"
        await loop.sock_sendall(sock, upgrade_request(order_id, token))
        data = b""
        deadline = started + timeout
        while b"connection_ack" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096),
                                           max(0.01, deadline - time.monotonic()))
            if not chunk:
                return "closed by the pod: " + (data.split(b"\r\n", 1)[0].decode() or "no answer")
            data += chunk
        return time.monotonic() - started
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"
    finally:
        sock.close()


def worker(port: int, ec_private_pem: bytes, indices: range, start_at: float, timeout: float,
           results) -> None:
    tokens = [jwt.encode(token_claims(f"storm_u{i}", f"ord_storm{i}"), ec_private_pem,
                         algorithm="ES256") for i in indices]

    async def storm() -> list:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # every worker at the same moment
        started = time.monotonic()
        socks = start_connects(port, len(indices))
        return await asyncio.gather(*(
            one_client(sock, token, f"ord_storm{i}", timeout, started)
            for sock, i, token in zip(socks, indices, tokens, strict=True)))

    results.put(uvloop.run(storm()))


def run(args) -> list:
    with stack() as world:
        _, port, _ = world.pod(MAX_CONNECTIONS_PER_POD=args.clients + 100,
                               LISTEN_BACKLOG=args.backlog or None, PYTHONPATH=args.pod_pythonpath)
        listen = subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True,
                                text=True).stdout.split()
        backlog = listen[-3] if len(listen) >= 3 else "?"  # Send-Q of a LISTEN socket
        share = -(-args.clients // args.workers)
        results: multiprocessing.Queue = multiprocessing.Queue()
        start_at = time.time() + 3 + args.clients / 2000  # time to mint the tokens
        procs = [multiprocessing.Process(target=worker, args=(
            port, world.keys.ec_private_pem, range(w * share, min(args.clients, (w + 1) * share)),
            start_at, args.timeout, results)) for w in range(args.workers)]
        before = tcp_ext()
        for proc in procs:
            proc.start()
        times = [t for _ in procs for t in results.get()]
        for proc in procs:
            proc.join()
        after = tcp_ext()
    acked = sorted(t for t in times if not isinstance(t, str))
    failures = Counter(t for t in times if isinstance(t, str))
    overflows = after.get("ListenOverflows", 0) - before.get("ListenOverflows", 0)
    drops = after.get("ListenDrops", 0) - before.get("ListenDrops", 0)
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    p99 = acked[int(len(acked) * 0.99) - 1] if acked else float("nan")
    return [args.clients, somaxconn, backlog, overflows, drops, len(acked),
            f"{acked[-1] if acked else float('nan'):.2f}", f"{p99:.2f}",
            ", ".join(f"{n} {why}" for why, n in failures.most_common()) or "-"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=0, help="LISTEN_BACKLOG (0: the pod's default)")
    parser.add_argument("--somaxconn", type=int, default=0,
                        help="run in a private network namespace with this net.core.somaxconn")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a client waits for its ack")
    parser.add_argument("--pod-pythonpath", default=os.environ.get("PYTHONPATH", ""))
    args = parser.parse_args()
    if args.somaxconn and os.environ.get(IN_NAMESPACE) != "1":
        # again, inside a network namespace of its own (loopback up, somaxconn set)
        script = (f"ip link set lo up && echo {args.somaxconn} > /proc/sys/net/core/somaxconn "
                  f"&& exec {sys.executable} -m bench.bench_reconnect_storm " + " ".join(
                      f"'{a}'" for a in sys.argv[1:]))
        env = {**os.environ, IN_NAMESPACE: "1"}
        return subprocess.run(["unshare", "-n", "sh", "-c", script], env=env, cwd=REPO).returncode
    print(markdown(["clients", "somaxconn", "listen backlog", "ListenOverflows", "ListenDrops",
                    "acked", "last ack s", "p99 s", "not acked"], run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
