"""A private redis-server for development: no persistence, loopback only, a port of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ordertrack.devtools.processes import die_with, free_port, stop_process, wait_for


def redis_server_argv(port: int, workdir: Path, maxclients: int | None = None) -> list[str]:
    """`redis-server` on 127.0.0.1:`port`, nothing saved to disk, files under `workdir`."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]
    return argv + ["--maxclients", str(maxclients)] if maxclients else argv


class RedisServer:
    """A private redis-server on a free port; stop() and start() keep the port.

    `die_with_parent`: the server gets SIGTERM when this process dies (for a bench run from
    the main thread; the kernel ties it to the thread that started it).
    """

    def __init__(self, workdir: Path, port: int | None = None, maxclients: int = 10000,
                 die_with_parent: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.maxclients = maxclients
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            redis_server_argv(self.port, self.workdir, self.maxclients),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with(os.getpid()) if self.die_with_parent else None)

        def ping():
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
            try:
                return client.ping()
            finally:
                client.close()

        try:
            wait_for(ping, 10, what=f"redis-server on {self.port}")
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        self.proc = None
