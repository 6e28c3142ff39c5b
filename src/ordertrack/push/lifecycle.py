"""What a connection tells of its life, and what the pod does about it (every `Connection` is
given one `Lifecycle` as its `events`).

upgrade -> `on_open` (the hub's index, the first ping, the admission queue) -> admission
(`connection_ack`, replay, held updates) -> `on_text` / `on_pong` while it lives ->
`cleanup` exactly once, whatever ended it: the hub, the wheel, its registry slot, one JSON log
line, metrics, in that order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ordertrack import protocol
from ordertrack.push import metrics

disconnect_log = logging.getLogger("ordertrack.push.disconnect")


@dataclass(eq=False)
class Lifecycle:
    loop: Any
    hub: Any
    heartbeat: Any
    admission: Any
    user_registry: Any
    pod_id: str
    #: the pod's close scheduler (push/close_scheduler.py): `Connection.close` hands it the
    #: close frame and the disconnect
    closes: Any
    #: PUBSUB_MODE=sharded: the order's SSUBSCRIBE is dropped with its last watcher
    shards: Any = None

    def on_open(self, conn) -> None:
        # (the connection has already let go of the upgrade's headers: push/connection.py)
        now = self.loop.time()
        conn.opened_at = now
        conn.expires_at = now + (conn.expires_at - time.time())  # the token's exp, in loop time
        self.hub.add(conn)
        self.heartbeat.first(conn, now)
        self.admission.add(conn)
        metrics.CONNECTIONS_OPENED.inc()

    def on_text(self, conn, payload: bytes) -> None:
        message = protocol.parse_client_message(payload)
        if message.kind == "heartbeat":
            conn.deliver(protocol.HEARTBEAT_ACK)
        elif message.kind == "resume":
            if not conn.acked:
                conn.resume_seq = message.last_seq  # handled when the connection is admitted
            else:
                self.admission.resume(conn, message.last_seq)
        elif message.kind == "not_utf8":
            conn.close(protocol.INVALID_PAYLOAD, "text frames must be UTF-8")
        else:
            conn.deliver(protocol.error(message.error_code or "", message.error_message or ""))

    def on_pong(self, conn, payload: bytes) -> None:
        self.heartbeat.on_pong(conn, payload)

    def schedule_close_deadline(self, conn) -> None:
        """Our close frame went out: a client that never answers it is cut off by the wheel."""
        self.heartbeat.close_deadline(conn)

    def cleanup(self, conn) -> None:
        """Runs exactly once per connection, whatever ended it, in the log's order."""
        if conn.cleaned:
            return
        conn.cleaned = True
        reason = conn.close_reason
        if reason is None:
            handshake = conn.transport.close_handshake if conn.transport else None
            if handshake and handshake.sent:  # picows closed it itself: its parser's verdict
                reason = protocol.close_for_code(int(handshake.sent.code))
            elif handshake and handshake.recv:
                reason = protocol.CLIENT_CLOSE
            else:
                reason = protocol.CONNECTION_LOST
        # step one: stop fan-out to it; and its heartbeat entry
        self.hub.remove(conn)
        if self.shards is not None:
            self.shards.release(conn.order_id)
        self.heartbeat.forget(conn)
        # step two: release its slot in the user's registry (if it was registered)
        if conn.registered:
            self.user_registry.free_slot(conn.user_id, conn.connection_id)
        # step three: one log line; step four: metrics
        duration = self.loop.time() - conn.opened_at
        if disconnect_log.isEnabledFor(logging.INFO):
            disconnect_log.info("disconnect", extra={"fields": {
                "connection_id": conn.connection_id, "user_id": conn.user_id,
                "order_id": conn.order_id, "reason": reason.reason, "code": reason.code,
                "duration_s": round(duration, 3), "pod": self.pod_id,
            }})
        count, durations = metrics.disconnected(reason.reason)
        count.inc()
        durations.observe(duration)
