"""The push pod: composes the parts below on one event loop.

  server.py     the upgrade decision (in-memory checks only) -> a `Connection`
  connection.py one customer's WebSocket (picows listener)
  admission.py  after the 101: register, ack, replay, resume, in batches
  delivery.py   the delivery rules (hold until ack, never a `seq` twice, the resume gap)
  hub.py        order_id -> watchers; fanout.py decodes and encodes each update once
  broker.py     the ONE pub/sub subscription; registry.py the per-user registry
  timer_wheel.py every connection's ping, pong deadline and close deadline
  metrics.py    Prometheus and the Datadog gauge

Connection lifecycle: upgrade -> `on_open` (hub, wheel, admission queue) -> admission
(`connection_ack`, replay, held-back updates) -> live updates from the hub -> `cleanup`
exactly once: hub, registry slot, one JSON log line, metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import struct
import time

from redis.exceptions import RedisError

from ordertrack import protocol, redis_connect, redis_layout
from ordertrack.flags import providers
from ordertrack.flags.source import FlagSource
from ordertrack.malformed import MalformedLog
from ordertrack.models import CARRIERS
from ordertrack.push import connection, fanout, metrics, pubsub_reader, registry, timer_wheel
from ordertrack.push.admission import Admission, stream_after
from ordertrack.push.broker import Broker
from ordertrack.push.connection import HB_CLOSE_DUE, HB_PING_DUE, HB_PONG_DUE, Connection
from ordertrack.push.hub import Hub

log = logging.getLogger("ordertrack.push")
disconnect_log = logging.getLogger("ordertrack.push.disconnect")

#: watched orders whose state is compared per pipeline in the catch-up after an outage
CATCH_UP_CHUNK = 1000


class Pod:
    def __init__(self, cfg, verifier):
        self.cfg = cfg
        self.verifier = verifier
        self.pod_id = f"{cfg.pod_name}:{secrets.token_hex(3)}"
        self.interval = cfg.heartbeat_interval_seconds
        self.timeout = cfg.heartbeat_timeout_seconds
        self.loop = asyncio.get_running_loop()
        # pooled, retrying a dead connection on a fresh one; follows a Sentinel failover
        self.redis = redis_connect.command_client(cfg, max_connections=32)
        self.registry = registry.Registry(self.redis, self.pod_id, cfg.max_connections_per_user,
                                          cfg.pod_lease_seconds)
        #: the lease is renewed (and the flag re-read) this often
        self.housekeeping_seconds = cfg.pod_lease_seconds / 3
        self.admission = Admission(self)
        self.malformed_log = MalformedLog(logging.getLogger("ordertrack.push.malformed"))
        self.hub = Hub(on_malformed=self._on_malformed)
        self.connections: dict[str, Connection] = {}
        # a fine tick spreads pings: at 19,500 connections and 30 s, a 0.5 s tick sent ~325
        # pings in one burst (a ~15 ms stall on delivery); 20 ms sends ~13 per tick
        self.tick = min(max(min(self.interval, self.timeout) / 20.0, 0.005), 0.02)
        self.wheel = timer_wheel.TimerWheel(self.tick, 4096)
        self.flags = FlagSource(
            providers.build(cfg), loop=self.loop, region=cfg.region,
            heartbeat_defaults=(self.interval, self.timeout), carriers=CARRIERS,
            registry=metrics.REGISTRY)
        self.flags.on_change(self._on_flags_changed)
        self._reevaluating = False
        self._reevaluate_again = False
        self.draining = False
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self.broker = Broker(
            redis_connect.target_from_settings(cfg),
            control_channels=[redis_layout.control(self.pod_id), redis_layout.CONTROL_ALL],
            watched=self.hub.watches,
            on_update=self.hub.fanout.publish,
            on_control=self._on_control,
            on_live=self._on_live,
            on_lost=lambda: metrics.SUBSCRIBED.set(0),
            on_malformed=self._on_malformed,
            probe=lambda: self.redis.publish(redis_layout.control(self.pod_id),
                                             redis_layout.encode_probe()),
            deadline=cfg.redis_subscription_deadline_seconds,
        )
        metrics.REDIS_MESSAGES.watch(self.broker)
        metrics.DELIVERY.watch(self.hub)

    # --- start / stop --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._refresh_flag()
            await self.registry.heartbeat()
            await self.admission.load_scripts()
        except RedisError as exc:
            log.warning("redis not reachable at start (%s); continuing, will retry", exc)
        # named as /healthz reports them: "<loop> stopped"
        loops = {"subscription": self.broker.run(), "admission": self.admission.run(),
                 "releases": self.registry.run_releases(), "housekeeping": self._housekeeping_loop()}
        if self.cfg.datadog_agent_host:
            loops["datadog"] = metrics.datadog_loop(self.cfg, self._connections_by_carrier)
        log.info("hot path", extra={"fields": {
            "pubsub_reader": pubsub_reader.IMPLEMENTATION, "fanout": fanout.IMPLEMENTATION,
            "wheel": timer_wheel.IMPLEMENTATION, "connection": connection.IMPLEMENTATION}})
        for name, coro in loops.items():
            task = self.loop.create_task(coro, name=name)
            task.add_done_callback(self._on_task_done)
            self._tasks.append(task)
        self._tick_handle = self.loop.call_later(self.tick, self._on_tick)

    @property
    def ready(self) -> bool:
        return self.broker.live.is_set() and not self.draining

    @property
    def dead_task(self) -> str | None:
        """The first of the pod's long-running loops that has ended (it never should before
        `stop`): `/healthz` then fails, so Kubernetes restarts the pod."""
        if self._stopping:
            return None
        return next((task.get_name() for task in self._tasks if task.done()), None)

    def _on_task_done(self, task: asyncio.Task) -> None:
        if self._stopping:
            return
        exc = None if task.cancelled() else task.exception()
        log.error("pod loop %s ended; /healthz now fails", task.get_name(),
                  exc_info=(type(exc), exc, exc.__traceback__) if exc else None)

    async def drain(self, seconds: float) -> None:
        """Stop accepting, close every connection with 1001 in batches spread over `seconds`."""
        self.draining = True
        conns = list(self.connections.values())
        log.info("draining %d connections over %.1fs", len(conns), seconds)
        if conns:
            step = 0.05
            steps = max(1, int(seconds / step))
            batch = max(1, math.ceil(len(conns) / steps))
            for start in range(0, len(conns), batch):
                for conn in conns[start:start + batch]:
                    conn.close(protocol.SERVER_SHUTDOWN)
                if start + batch < len(conns):
                    await asyncio.sleep(step)
        deadline = self.loop.time() + max(2.0, self.timeout)
        while self.connections and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await self.registry.flush_releases(give_up_on_error=True)

    async def stop(self) -> None:
        self._stopping = True
        self.broker.stop()
        if self._tick_handle:
            self._tick_handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.registry.forget_pod()
        self.flags.close()
        await redis_connect.close_client(self.redis)

    # --- connection lifecycle ------------------------------------------------------------------
    def accepts_user(self, user_id: str, client_class: str) -> bool:
        """The upgrade's kill-switch check: the order's carrier is not known yet (see flags)."""
        return self.flags.realtime_enabled(user_id, None, client_class)

    def on_open(self, conn: Connection) -> None:
        # (the connection has already let go of the upgrade's headers: push/connection.py)
        now = self.loop.time()
        conn.opened_at = now
        conn.expires_at = now + (conn.expires_at - time.time())  # the token's exp, in loop time
        self.connections[conn.connection_id] = conn
        self.hub.add(conn)
        # first ping jittered, so a reconnect storm does not ping in lockstep
        conn.last_ping = now
        interval, _ = self.flags.heartbeat(conn.client_class)
        self._schedule_heartbeat(conn, now + interval * random.uniform(0.5, 1.0))
        self.admission.add(conn)
        metrics.CONNECTIONS_OPENED.inc()

    def _schedule_heartbeat(self, conn: Connection, when: float) -> None:
        """The connection's next ping or pong deadline, but never later than its token's exp:
        the wheel entry that fires then closes it with 1008 (no timer of its own)."""
        self.wheel.schedule(conn, min(when, conn.expires_at))

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        # only the answer to our latest ping counts: unsolicited pongs keep nothing alive
        if conn.hb_state == HB_PONG_DUE and payload == _ping_payload(conn.last_ping):
            conn.hb_state = HB_PING_DUE
            interval, _ = self.flags.heartbeat(conn.client_class)  # a flag change applies here
            self._schedule_heartbeat(conn, max(conn.last_ping + interval, self.loop.time()))

    def on_text(self, conn: Connection, payload: bytes) -> None:
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
            conn.deliver(protocol.error(message.error_code, message.error_message))

    def spawn(self, coro) -> None:
        """A short-lived task, referenced until done (the loop only keeps weak references)."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def schedule_close_deadline(self, conn: Connection) -> None:
        conn.hb_state = HB_CLOSE_DUE
        self.wheel.schedule(conn, self.loop.time() + max(self.timeout, 1.0))

    def cleanup(self, conn: Connection) -> None:
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
        self.wheel.cancel(conn)
        self.connections.pop(conn.connection_id, None)
        # step two: release its slot in the user's registry (if it was registered)
        if conn.registered:
            self.registry.release(conn.user_id, conn.connection_id)
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

    # --- heartbeat: one loop timer drives the wheel for every connection -------------------------
    def _on_tick(self) -> None:
        now = self.loop.time()
        try:
            for conn in self.wheel.advance(now):
                if conn.cleaned:
                    continue
                state = conn.hb_state
                if state == HB_CLOSE_DUE:
                    conn.transport.disconnect(graceful=False)
                elif conn.close_reason is not None:
                    continue
                elif now >= conn.expires_at:
                    conn.close(protocol.TOKEN_EXPIRED)
                elif state == HB_PING_DUE:
                    conn.transport.send_ping(_ping_payload(now))
                    conn.last_ping = now
                    conn.hb_state = HB_PONG_DUE
                    _, timeout = self.flags.heartbeat(conn.client_class)
                    self._schedule_heartbeat(conn, now + timeout)
                    conn.check_pending()
                elif state == HB_PONG_DUE:
                    conn.close(protocol.HEARTBEAT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("heartbeat tick failed")
        self._tick_handle = self.loop.call_at(now + self.tick, self._on_tick)

    # --- Redis messages --------------------------------------------------------------------------
    def _on_malformed(self, order_id: str | None, reason: str) -> None:
        metrics.MALFORMED.labels(reason).inc()
        self.malformed_log(order_id, reason)

    def _on_control(self, payload: bytes) -> None:
        try:
            message = redis_layout.decode_control(payload)
        except redis_layout.MalformedControl as exc:
            log.warning("ignoring %s", exc)
            return
        if message.op == redis_layout.EVICT:
            conn = self.connections.get(message.connection_id)
            if conn is not None:
                conn.close(protocol.CONNECTION_LIMIT)
        elif message.op == redis_layout.FLAG:
            self.spawn(self._refresh_flag())

    async def _on_live(self, resubscribed: bool) -> None:
        metrics.SUBSCRIBED.set(1)
        self.admission.wake()
        delay = 0.05
        while resubscribed and self.broker.live.is_set():
            try:
                await self._reregister()
                await self._catch_up()
                await self._refresh_flag()
                return
            except RedisError as exc:
                log.error("catch-up after reconnect failed: %s; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _catch_up(self) -> None:
        """After a Redis outage: push every watched order's events we missed, in order."""
        watched = list(self.hub.watches.items())
        missed = 0
        for start in range(0, len(watched), CATCH_UP_CHUNK):
            chunk = watched[start:start + CATCH_UP_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for order_id, _ in chunk:
                pipe.hget(redis_layout.state(order_id), "seq")
            seqs = await pipe.execute()
            behind = [(order_id, watch) for (order_id, watch), seq in zip(chunk, seqs, strict=True)
                      if redis_layout.state_seq(seq) > watch.seq]
            if not behind:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for order_id, watch in behind:
                stream_after(pipe, order_id, watch.seq)
            for (order_id, _watch), entries in zip(behind, await pipe.execute(), strict=True):
                for entry in redis_layout.decode_stream(entries, self._skip_entry(order_id)):
                    self.hub.publish(order_id, entry.payload)
                    missed += 1
        if missed:
            metrics.CATCHUP_EVENTS.inc(missed)
        log.info("caught up after reconnect", extra={"fields": {
            "orders_watched": len(watched), "events_replayed": missed}})

    @staticmethod
    def _skip_entry(order_id: str):
        def skip(entry_id, exc: redis_layout.MalformedMessage) -> None:
            log.warning("skipping unreadable stream entry %s of %s: %s", entry_id, order_id, exc)
        return skip

    async def _reregister(self) -> None:
        """Redis may have restarted empty: put this pod's live connections back in the registry."""
        await self.registry.reregister([(c.user_id, c.connection_id) for c in self.connections.values()
                                        if c.registered and not c.cleaned])

    # --- background upkeep -----------------------------------------------------------------------
    async def _refresh_flag(self) -> None:
        """The Redis provider's document (other providers watch their own source)."""
        if self.flags.uses_redis:
            self.flags.observe_document(await self.redis.get(redis_layout.FLAG_KEY))

    def _on_flags_changed(self) -> None:
        if self._reevaluating:
            self._reevaluate_again = True
        else:
            self.spawn(self._reevaluate())

    async def _reevaluate(self) -> None:
        """Close, with 4003, every open connection the flags no longer allow; in slices, so
        a flagd evaluation per connection never stalls delivery for long."""
        self._reevaluating = True
        try:
            while True:
                self._reevaluate_again = False
                closed = 0
                for index, conn in enumerate(list(self.connections.values())):
                    if index and index % 200 == 0:
                        await asyncio.sleep(0)
                    if conn.cleaned or conn.close_reason is not None:
                        continue
                    # no decision (provider not ready): what was allowed stays allowed
                    if self.flags.decide(conn.user_id, conn.carrier, conn.client_class) is False:
                        conn.close(protocol.FEATURE_DISABLED)
                        closed += 1
                log.info("flags re-evaluated", extra={"fields": {
                    "connections": len(self.connections), "closed_feature_disabled": closed}})
                if not self._reevaluate_again:
                    return
        finally:
            self._reevaluating = False

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_seconds)
            try:
                await self.registry.heartbeat()
                await self._refresh_flag()
            except RedisError as exc:
                log.warning("housekeeping: redis unavailable (%s)", exc)
            self._update_gauges()

    def _connections_by_carrier(self) -> dict[str, int]:
        counts = dict.fromkeys((*CARRIERS, "unknown"), 0)
        for conn in self.connections.values():
            carrier = conn.carrier if conn.carrier in counts else "unknown"
            counts[carrier] += 1
        return counts

    def _update_gauges(self) -> None:
        for carrier, count in self._connections_by_carrier().items():
            metrics.ACTIVE_CONNECTIONS.labels(self.cfg.pod_name, self.cfg.region, carrier).set(count)


def _ping_payload(sent_at: float) -> bytes:
    """Our ping's application data: its send time, so only its own pong matches it."""
    return struct.pack("!d", sent_at)
