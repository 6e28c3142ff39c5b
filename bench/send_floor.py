"""One-off: the kernel's floor under the watched flood (one `send` per message and watcher).

Run: .venv/bin/python -m bench.send_floor [connections, default 19500] [sends, default 390000]

`connections` loopback TCP connections, their receivers in a child process (epoll, read and
discard, as the load generator's workers do); this process writes one tracking_update-sized
WebSocket frame per `send()`, round-robin over the sockets (as the fan-out to one watcher per
order does), with no event loop and no WebSocket library, and prints its own user and system
CPU per send. Whatever the pod does per message comes on top of this.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import time

from bench.lib import cli

FRAME = b"\x81\x7e\x00\xb4" + b"x" * 180  # a 180-byte text frame, unmasked (server to client)


def receive(port: int, connections: int, ready: int) -> None:
    """The child: open the connections, say so on `ready`, then read and discard."""
    selector = selectors.EpollSelector()
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    os.write(ready, b"up")
    while True:
        for key, _ in selector.select():
            try:
                if not key.fileobj.recv(65536):
                    return
            except BlockingIOError:
                pass


def main() -> int:
    args = cli(__doc__, connections=19_500, sends=390_000)
    connections, sends = args.connections, args.sends
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = server.getsockname()[1]
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        try:
            receive(port, connections, ready_w)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        socks = [server.accept()[0] for _ in range(connections)]
        for sock in socks:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        os.read(ready_r, 2)
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            for i in range(sends):
                socks[i % connections].send(FRAME)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            user = after.ru_utime - before.ru_utime
            system = after.ru_stime - before.ru_stime
            print(f"{connections:,} connections: {sends:,} sends in {wall:.2f} s, user "
                  f"{user / sends * 1e6:.2f} us + system {system / sends * 1e6:.2f} us per send "
                  f"= {sends / (user + system):,.0f} sends per CPU second", flush=True)
            time.sleep(0.5)  # the receiver catches up
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
