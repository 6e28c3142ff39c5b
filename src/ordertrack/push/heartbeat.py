"""Every connection's ping, pong deadline, token expiry and close deadline: one timer wheel
driven by one loop timer, no Task or timer per connection.

A connection's `hb_state` says what its wheel entry means when it fires: HB_PING_DUE (ping it,
then wait for the pong), HB_PONG_DUE (no pong in time: close 4000), HB_CLOSE_DUE (our close
frame was not answered: cut it off). An entry never fires later than the token's `exp`: then
the connection is closed 1008. Intervals come from the flags (per client class), so a flag
change applies at the next ping.
"""

from __future__ import annotations

import logging
import random
import struct

from ordertrack import protocol
from ordertrack.push import timer_wheel
from ordertrack.push.connection import HB_CLOSE_DUE, HB_PING_DUE, HB_PONG_DUE

log = logging.getLogger("ordertrack.push")


def ping_payload(sent_at: float) -> bytes:
    """Our ping's application data: its send time, so only its own pong matches it."""
    return struct.pack("!d", sent_at)


class Heartbeat:
    def __init__(self, loop, flags, interval: float, timeout: float, closes):
        self.loop = loop
        self.flags = flags
        #: the pod's close scheduler: an unanswered close's abort goes through it too
        self.closes = closes
        #: how long a client may take to answer our close (and a drain waits at least)
        self.timeout = timeout
        # a fine tick spreads pings: at 19,500 connections and 30 s, a 0.5 s tick sent ~325
        # pings in one burst (a ~15 ms stall on delivery); 20 ms sends ~13 per tick
        self.tick = min(max(min(interval, timeout) / 20.0, 0.005), 0.02)
        self.wheel = timer_wheel.TimerWheel(self.tick, 4096)
        self._handle = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.tick, self._on_tick)

    def stop(self) -> None:
        if self._handle:
            self._handle.cancel()

    def first(self, conn, now: float) -> None:
        """A new connection's first ping, jittered, so a reconnect storm does not ping in
        lockstep."""
        conn.last_ping = now
        interval, _ = self.flags.heartbeat(conn.client_class)
        self.schedule(conn, now + interval * random.uniform(0.5, 1.0))

    def schedule(self, conn, when: float) -> None:
        """The connection's next ping or pong deadline, but never later than its token's exp:
        the wheel entry that fires then closes it with 1008 (no timer of its own)."""
        self.wheel.schedule(conn, min(when, conn.expires_at))

    def on_pong(self, conn, payload: bytes) -> None:
        # only the answer to our latest ping counts: unsolicited pongs keep nothing alive
        if conn.hb_state == HB_PONG_DUE and payload == ping_payload(conn.last_ping):
            conn.hb_state = HB_PING_DUE
            interval, _ = self.flags.heartbeat(conn.client_class)  # a flag change applies here
            self.schedule(conn, max(conn.last_ping + interval, self.loop.time()))

    def close_deadline(self, conn) -> None:
        conn.hb_state = HB_CLOSE_DUE
        self.wheel.schedule(conn, self.loop.time() + max(self.timeout, 1.0))

    def forget(self, conn) -> None:
        self.wheel.cancel(conn)

    def _on_tick(self) -> None:
        now = self.loop.time()
        try:
            for conn in self.wheel.advance(now):
                if conn.cleaned:
                    continue
                state = conn.hb_state
                if state == HB_CLOSE_DUE:
                    self.closes.add(conn.transport.disconnect, False)
                elif conn.close_reason is not None:
                    continue
                elif now >= conn.expires_at:
                    conn.close(protocol.TOKEN_EXPIRED)
                elif state == HB_PING_DUE:
                    conn.transport.send_ping(ping_payload(now))
                    conn.last_ping = now
                    conn.hb_state = HB_PONG_DUE
                    _, timeout = self.flags.heartbeat(conn.client_class)
                    self.schedule(conn, now + timeout)
                    conn.check_pending()
                elif state == HB_PONG_DUE:
                    conn.close(protocol.HEARTBEAT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("heartbeat tick failed")
        self._handle = self.loop.call_at(now + self.tick, self._on_tick)
