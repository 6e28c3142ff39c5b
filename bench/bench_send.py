"""One-off: does writing the prebuilt frame straight to the transport beat picows' send?

Run: .venv/bin/python -m bench.bench_send [frames, default 100000] [connections, default 100]

A picows server on uvloop (the pod's options) with `connections` clients in a child process
that read and discard. Per round the server writes `frames` copies of a typical
`tracking_update` frame, round-robin over the connections (as a fan-out to one watcher per
order does), either with `WSTransport.send(TEXT, payload)` (picows builds the header each
time), with `underlying_transport.write(connection.text_frame(payload))` built once, or with the
pod's `Connection.write_frame` of that frame (the Cython one: picows' own one-`send(2)` fast
path), and prints the server's CPU time per frame for each. Socket writes included: that is the point.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time

import uvloop
from picows import WSListener, WSMsgType, ws_connect, ws_create_server

from bench.lib import cli
from ordertrack.push import connection

PAYLOAD = (b'{"event":"tracking_update","data":{"status":"in_transit","location":"Newark NJ '
           b'Distribution Center","timestamp":"2025-10-03T14:22:00Z","estimated_delivery":'
           b'"2025-10-04T18:00:00Z","carrier":"dhl","seq":12}}')


class BenchPod:
    """The one setting a connection reads of its pod when it writes."""

    max_pending_bytes = 262144


class Sink(WSListener):
    def on_ws_connected(self, transport) -> None:
        SERVER.append(transport)


SERVER: list = []


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def clients(port: int, n: int) -> None:
    class Quiet(WSListener):
        pass

    for _ in range(n):
        await ws_connect(Quiet, f"ws://127.0.0.1:{port}/")
    print("up", flush=True)
    await asyncio.Event().wait()


async def server(frames: int, n: int) -> None:
    srv = await ws_create_server(lambda _request: Sink(), "127.0.0.1", 0, use_aiofastnet=False,
                                 enable_auto_ping=False)
    port = srv.sockets[0].getsockname()[1]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_send", "--clients", str(port), str(n),
        stdout=subprocess.PIPE)
    try:
        await child.stdout.readline()  # "up": every client is connected
        while len(SERVER) < n:  # noqa: ASYNC110 - the server side of the last ones
            await asyncio.sleep(0.01)
        frame = connection.text_frame(PAYLOAD)
        conns = []
        for transport in SERVER:
            conn = connection.Connection(BenchPod(), "ws_conn_bench", "u_bench", "ord_1", None,
                                         max_pending_bytes=BenchPod.max_pending_bytes)
            conn.transport = transport
            conns.append(conn)
        modes = ("picows send", "prebuilt frame", f"write_frame ({connection.IMPLEMENTATION})")
        for name in modes * 2:
            start = cpu()
            wall = time.perf_counter()
            for i in range(frames):
                transport = SERVER[i % n]
                if name == "picows send":
                    transport.send(WSMsgType.TEXT, PAYLOAD)
                elif name == "prebuilt frame":
                    transport.underlying_transport.write(frame)
                else:
                    conns[i % n].write_frame(frame)
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let the loop flush, as between fan-outs
            used = cpu() - start
            print(f"{name:25s} {used / frames * 1e6:6.2f} us of server CPU per frame "
                  f"({time.perf_counter() - wall:.2f} s wall)", flush=True)
            await asyncio.sleep(0.5)
    finally:
        child.kill()
        srv.close()


def main() -> int:
    if sys.argv[1:2] == ["--clients"]:
        uvloop.run(clients(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    args = cli(__doc__, frames=100_000, connections=100)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvloop.run(server(args.frames, args.connections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
