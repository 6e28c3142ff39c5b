"""The push pod: connections, hub, heartbeat wheel, registry and broker, on one event loop.

Connection lifecycle:
  upgrade (server.py, in-memory checks only) -> `on_open` (hub, wheel, admission queue)
  -> admission worker (one pipeline per batch: register.lua + state hash [+ stream for resume])
  -> `connection_ack`, replay, held-back updates -> live updates from the hub
  -> `cleanup` exactly once: hub, registry slot, one JSON log line, metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import struct
import time
from collections import deque

from multidict import CIMultiDict
from redis.exceptions import NoScriptError, RedisError

from ordertrack import flags, protocol, redis_connect, redis_layout
from ordertrack.models import CARRIERS
from ordertrack.push import metrics, registry
from ordertrack.push.broker import Broker
from ordertrack.push.connection import HB_CLOSE_DUE, HB_PING_DUE, HB_PONG_DUE, Connection
from ordertrack.push.hub import Hub
from ordertrack.push.timer_wheel import TimerWheel

log = logging.getLogger("ordertrack.push")
disconnect_log = logging.getLogger("ordertrack.push.disconnect")

ADMISSION_BATCH = 256
_NO_HEADERS = CIMultiDict()
RESUME_MAX_EVENTS = 1000
RESUME_FAILED = protocol.error("RESUME_UNAVAILABLE", "resume failed; refetch over REST")


class Pod:
    def __init__(self, cfg, verifier):
        self.cfg = cfg
        self.verifier = verifier
        self.pod_id = f"{cfg.pod_name}:{secrets.token_hex(3)}"
        self.interval = cfg.heartbeat_interval_seconds
        self.timeout = cfg.heartbeat_timeout_seconds
        self.max_pending_bytes = cfg.ws_max_pending_bytes
        self.loop = asyncio.get_running_loop()
        # pooled, retrying a dead connection on a fresh one; follows a Sentinel failover
        self.redis = redis_connect.command_client(cfg, max_connections=32)
        self.hub = Hub(on_delivered=self._on_delivered)
        self.connections: dict[str, Connection] = {}
        # a fine tick spreads pings: at 19,500 connections and 30 s, a 0.5 s tick sent ~325
        # pings in one burst (a ~15 ms stall on delivery); 20 ms sends ~13 per tick
        self.tick = min(max(min(self.interval, self.timeout) / 20.0, 0.005), 0.02)
        self.wheel = TimerWheel(self.tick, 4096)
        self.pending: deque[Connection] = deque()
        self.releases: list[tuple[str, str]] = []
        self.flag = flags.Flag()
        #: every pod's lease expiry (ms) as last read from ws:pods (registry.py)
        self.leases: dict[str, float] = {}
        self.lease_ms = cfg.pod_lease_seconds * 1000
        self.housekeeping_seconds = cfg.pod_lease_seconds / 3
        self.draining = False
        self._admission_wakeup = asyncio.Event()
        self._release_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self.broker = Broker(
            redis_connect.target_from_settings(cfg),
            control_channels=[redis_layout.control(self.pod_id), redis_layout.CONTROL_ALL],
            on_update=self._on_update,
            on_control=self._on_control,
            on_live=self._on_live,
            on_lost=lambda: metrics.SUBSCRIBED.set(0),
            probe=lambda: self.redis.publish(redis_layout.control(self.pod_id),
                                             redis_layout.encode_probe()),
            deadline=cfg.redis_subscription_deadline_seconds,
        )

    # --- start / stop --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._refresh_flag()
            await self._renew_lease()
        except RedisError as exc:
            log.warning("redis not reachable at start (%s); continuing, will retry", exc)
        loops = [self.broker.run(), self._admission_loop(), self._release_loop(),
                 self._housekeeping_loop()]
        if self.cfg.datadog_agent_host:
            loops.append(self._datadog_loop())
        for coro in loops:
            task = self.loop.create_task(coro, name=coro.__qualname__)
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
        await self._flush_releases()

    async def stop(self) -> None:
        self._stopping = True
        self.broker.stop()
        if self._tick_handle:
            self._tick_handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:  # a lease over now: slots this pod could not release count no more
            await self.redis.zadd(redis_layout.PODS_KEY, {self.pod_id: 0})
        except RedisError:
            pass
        await redis_connect.close_client(self.redis)

    # --- connection lifecycle ------------------------------------------------------------------
    def accepts_user(self, user_id: str) -> bool:
        return flags.is_enabled(self.flag, user_id, self.cfg.region)

    def on_open(self, conn: Connection) -> None:
        # the upgrade's headers (the JWT among them) would otherwise live as long as the
        # connection: ~1-2 KB each, for nothing
        transport = conn.transport
        transport.request.headers = _NO_HEADERS
        transport.response.headers = _NO_HEADERS
        now = self.loop.time()
        conn.opened_at = now
        conn.expires_at = now + (conn.expires_at - time.time())  # the token's exp, in loop time
        self.connections[conn.connection_id] = conn
        self.hub.add(conn)
        # first ping jittered, so a reconnect storm does not ping in lockstep
        conn.last_ping = now
        self._schedule_heartbeat(conn, now + self.interval * random.uniform(0.5, 1.0))
        self.pending.append(conn)
        self._admission_wakeup.set()
        metrics.CONNECTIONS_OPENED.inc()

    def _schedule_heartbeat(self, conn: Connection, when: float) -> None:
        """The connection's next ping or pong deadline, but never later than its token's exp:
        the wheel entry that fires then closes it with 1008 (no timer of its own)."""
        self.wheel.schedule(conn, min(when, conn.expires_at))

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        # only the answer to our latest ping counts: unsolicited pongs keep nothing alive
        if conn.hb_state == HB_PONG_DUE and payload == _ping_payload(conn.last_ping):
            conn.hb_state = HB_PING_DUE
            self._schedule_heartbeat(conn, max(conn.last_ping + self.interval, self.loop.time()))

    def on_text(self, conn: Connection, payload: bytes) -> None:
        message = protocol.parse_client_message(payload)
        if message.kind == "heartbeat":
            conn.deliver(protocol.HEARTBEAT_ACK, None)
        elif message.kind == "resume":
            if not conn.acked:
                conn.resume_seq = message.last_seq  # handled when the connection is admitted
            else:
                self._start_resume(conn, message.last_seq)
        elif message.kind == "not_utf8":
            conn.close(protocol.INVALID_PAYLOAD, "text frames must be UTF-8")
        else:
            conn.deliver(protocol.error(message.error_code, message.error_message), None)

    def _start_resume(self, conn: Connection, last_seq: int) -> None:
        conn.acked = False  # hold live updates back until the replay is written
        self._spawn(self._resume(conn, last_seq))

    def _spawn(self, coro) -> None:
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
            self.releases.append((conn.user_id, redis_layout.member(self.pod_id, conn.connection_id)))
            self._release_wakeup.set()
        # step three: one log line; step four: metrics
        duration = self.loop.time() - conn.opened_at
        disconnect_log.info("disconnect", extra={"fields": {
            "connection_id": conn.connection_id, "user_id": conn.user_id,
            "order_id": conn.order_id, "reason": reason.reason, "code": reason.code,
            "duration_s": round(duration, 3), "pod": self.pod_id,
        }})
        metrics.DISCONNECTS.labels(reason.reason).inc()
        metrics.CONNECTION_DURATION.labels(reason.reason).observe(duration)

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
                    self._schedule_heartbeat(conn, now + self.timeout)
                    conn.check_pending()
                elif state == HB_PONG_DUE:
                    conn.close(protocol.HEARTBEAT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("heartbeat tick failed")
        self._tick_handle = self.loop.call_at(now + self.tick, self._on_tick)

    # --- admission: registry + state, batched, after the 101 ------------------------------------
    async def _admission_loop(self) -> None:
        while True:
            await self._admission_wakeup.wait()
            self._admission_wakeup.clear()
            while self.pending:
                if not self.broker.live.is_set():
                    await self._wait_for_subscription()
                    continue
                batch = []
                while self.pending and len(batch) < ADMISSION_BATCH:
                    conn = self.pending.popleft()
                    if not conn.cleaned and conn.close_reason is None:
                        batch.append(conn)
                if not batch:
                    continue
                try:
                    await self._admit(batch)
                except Exception:  # noqa: BLE001 - one bad batch must not stop all admissions
                    log.exception("admission of %d connections failed", len(batch))
                    for conn in batch:
                        if not conn.acked:
                            conn.close(protocol.INTERNAL_ERROR, "admission failed")

    async def _wait_for_subscription(self) -> None:
        """Connections wait up to REDIS_SUBSCRIBE_TIMEOUT_SECONDS for a live PSUBSCRIBE."""
        limit = self.cfg.redis_subscribe_timeout_seconds
        while self.pending and not self.broker.live.is_set():
            oldest = self.pending[0]
            remaining = oldest.opened_at + limit - self.loop.time()
            if remaining > 0:
                try:
                    await asyncio.wait_for(self.broker.live.wait(), remaining)
                except TimeoutError:
                    pass
                continue
            self.pending.popleft()
            oldest.close(protocol.INTERNAL_ERROR, "tracking subscription unavailable")

    async def _admit(self, batch: list[Connection]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        wall_ms = int(time.time() * 1000)
        dead = registry.dead_pods(self.leases, wall_ms, self.pod_id)
        # a `resume` may arrive while the pipeline runs: remember what was asked of Redis
        resume_from = [conn.resume_seq for conn in batch]
        for conn, last_seq in zip(batch, resume_from, strict=True):
            pipe.execute_command(
                "EVALSHA", registry.REGISTER_SHA, 1, redis_layout.user(conn.user_id),
                *registry.register_args(self.pod_id, conn.connection_id, wall_ms,
                                        self.cfg.max_connections_per_user, dead))
            pipe.hgetall(redis_layout.state(conn.order_id))
            if last_seq is not None:
                pipe.xrange(redis_layout.stream(conn.order_id), redis_layout.after_seq(last_seq), "+",
                            count=RESUME_MAX_EVENTS)
        try:
            # a command's error (one order's keys) is that connection's alone: see below
            results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            log.warning("admission of %d connections failed: %s; retrying", len(batch), exc)
            # our registrations may or may not have landed: put them back, retry shortly
            self.pending.extendleft(reversed(batch))
            await asyncio.sleep(0.1)
            limit = self.cfg.redis_subscribe_timeout_seconds
            now = self.loop.time()
            while self.pending and self.pending[0].opened_at + limit <= now:
                self.pending.popleft().close(protocol.INTERNAL_ERROR, "tracking registry unavailable")
            return
        if any(isinstance(result, NoScriptError) for result in results):
            # a node without the script (a new master after a failover): load it everywhere,
            # then admit again those it refused (they did not run, nothing to undo)
            await self.redis.script_load(registry.REGISTER_LUA)
        index = 0
        for conn, last_seq in zip(batch, resume_from, strict=True):
            evicted, state = results[index], results[index + 1]
            index += 2
            entries = None
            if last_seq is not None:
                entries = results[index]
                index += 1
            if isinstance(evicted, NoScriptError):
                self.pending.append(conn)
                self._admission_wakeup.set()
                continue
            if isinstance(evicted, Exception):
                log.warning("registering %s failed: %s", conn.connection_id, evicted)
                conn.close(protocol.INTERNAL_ERROR, "registration failed")
                continue
            conn.registered = True
            if conn.cleaned:
                self.releases.append((conn.user_id, redis_layout.member(self.pod_id, conn.connection_id)))
                self._release_wakeup.set()
            for member in evicted:
                pod_id, connection_id = redis_layout.split_member(member)
                if pod_id == self.pod_id:
                    victim = self.connections.get(connection_id)
                    if victim is not None:
                        victim.close(protocol.CONNECTION_LIMIT)
            if conn.cleaned or conn.close_reason is not None:
                continue
            if isinstance(state, Exception):
                log.warning("state of %s unreadable: %s", conn.order_id, state)
                conn.close(protocol.INTERNAL_ERROR, "order state unreadable")
                continue
            if isinstance(entries, Exception):
                log.warning("history of %s unreadable: %s", conn.order_id, entries)
                conn.backlog = [(None, RESUME_FAILED), *(conn.backlog or ())]
                if conn.resume_seq == last_seq:
                    conn.resume_seq = None
                last_seq = entries = None
            self._acknowledge(conn, redis_layout.decode_state(state), last_seq, entries)

    def _acknowledge(self, conn: Connection, state: redis_layout.OrderStateHash,
                     fetched_from: int | None, entries) -> None:
        conn.carrier = state.carrier
        if not flags.is_enabled(self.flag, conn.user_id, self.cfg.region, conn.carrier):
            conn.close(protocol.FEATURE_DISABLED)
            return
        state_seq = state.seq
        watch = self.hub.watches.get(conn.order_id)
        if watch is not None and state_seq > watch.seq:
            watch.seq = state_seq
        conn.sent_seq = state_seq
        conn.send(protocol.connection_ack(conn.connection_id, conn.order_id, state.carrier,
                                          state.status, state_seq))
        resume_seq, conn.resume_seq = conn.resume_seq, None
        if fetched_from is not None and resume_seq == fetched_from:
            self._replay(conn, resume_seq, state_seq, entries or [])
        elif resume_seq is not None:
            # asked for while we were registering it: fetch that replay now (updates stay held)
            self._start_resume(conn, resume_seq)
            return
        self._release_backlog(conn)

    def _replay(self, conn: Connection, last_seq: int, state_seq: int, entries) -> None:
        """Send the stream's events after `last_seq` in order; say so if they are gone."""
        events = redis_layout.decode_stream(entries, self._skip_entry(conn.order_id))
        first_seq = events[0].seq if events else None
        if state_seq > last_seq and (first_seq is None or first_seq > last_seq + 1):
            conn.send(protocol.error(
                "RESUME_UNAVAILABLE",
                f"events after seq {last_seq} are no longer kept; refetch over REST"))
        for entry in events:
            if entry.seq <= last_seq:
                continue
            conn.send(protocol.tracking_update(entry.message))
            if entry.seq > conn.sent_seq:
                conn.sent_seq = entry.seq

    @staticmethod
    def _skip_entry(order_id: str):
        def skip(entry_id, exc: redis_layout.MalformedMessage) -> None:
            log.warning("skipping unreadable stream entry %s of %s: %s", entry_id, order_id, exc)
        return skip

    def _release_backlog(self, conn: Connection) -> None:
        conn.acked = True
        backlog, conn.backlog = conn.backlog, None
        for seq, frame in backlog or ():
            conn.deliver(frame, seq)

    async def _resume(self, conn: Connection, last_seq: int) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(redis_layout.state(conn.order_id), "seq")
            pipe.xrange(redis_layout.stream(conn.order_id), redis_layout.after_seq(last_seq), "+", count=RESUME_MAX_EVENTS)
            state_seq, entries = await pipe.execute()
        except RedisError as exc:
            log.warning("resume for %s failed: %s", conn.connection_id, exc)
            if not conn.cleaned:
                conn.send(RESUME_FAILED)
                self._release_backlog(conn)
            return
        if conn.cleaned or conn.close_reason is not None:
            return
        self._replay(conn, last_seq, redis_layout.state_seq(state_seq), entries)
        self._release_backlog(conn)

    # --- Redis messages --------------------------------------------------------------------------
    def _on_update(self, order_id: str, payload: bytes) -> None:
        metrics.MESSAGES_IN.inc()
        self.hub.publish(order_id, payload)

    def _on_delivered(self, count: int, latency: float) -> None:
        metrics.FRAMES_OUT.inc(count)
        metrics.DELIVERY_LATENCY.observe(latency)

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
            self._spawn(self._refresh_flag())

    async def _on_live(self, resubscribed: bool) -> None:
        metrics.SUBSCRIBED.set(1)
        self._admission_wakeup.set()
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
        for start in range(0, len(watched), 1000):
            chunk = watched[start:start + 1000]
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
                pipe.xrange(redis_layout.stream(order_id), redis_layout.after_seq(watch.seq), "+", count=RESUME_MAX_EVENTS)
            for (order_id, _watch), entries in zip(behind, await pipe.execute(), strict=True):
                for entry in redis_layout.decode_stream(entries, self._skip_entry(order_id)):
                    self.hub.publish(order_id, entry.payload)
                    missed += 1
        if missed:
            metrics.CATCHUP_EVENTS.inc(missed)
        log.info("caught up after reconnect", extra={"fields": {
            "orders_watched": len(watched), "events_replayed": missed}})

    async def _reregister(self) -> None:
        """Redis may have restarted empty: put this pod's live connections back in the registry."""
        await self._renew_lease()
        conns = [c for c in self.connections.values() if c.registered and not c.cleaned]
        for start in range(0, len(conns), 1000):
            pipe = self.redis.pipeline(transaction=False)
            for conn in conns[start:start + 1000]:
                key = redis_layout.user(conn.user_id)
                pipe.zadd(key, {redis_layout.member(self.pod_id, conn.connection_id): 0}, nx=True)
                pipe.expire(key, registry.USER_KEY_TTL_SECONDS)
            await pipe.execute()

    # --- background upkeep -----------------------------------------------------------------------
    async def _release_loop(self) -> None:
        while True:
            await self._release_wakeup.wait()
            self._release_wakeup.clear()
            await self._flush_releases()

    async def _flush_releases(self) -> None:
        while self.releases:
            batch, self.releases = self.releases, []
            pipe = self.redis.pipeline(transaction=False)
            for user_id, member in batch:
                pipe.zrem(redis_layout.user(user_id), member)
            try:
                await pipe.execute()
            except RedisError as exc:
                log.warning("releasing %d registry slots failed: %s; will retry", len(batch), exc)
                self.releases[:0] = batch
                await asyncio.sleep(0.5)
                if self.draining:
                    return

    async def _renew_lease(self) -> None:
        """Renew this pod's lease in ws:pods, prune long-dead pods, read every lease back."""
        now_ms = time.time() * 1000
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(redis_layout.PODS_KEY, {self.pod_id: now_ms + self.lease_ms})
        pipe.zremrangebyscore(redis_layout.PODS_KEY, "-inf",
                              now_ms - registry.USER_KEY_TTL_SECONDS * 1000)
        pipe.zrange(redis_layout.PODS_KEY, 0, -1, withscores=True)
        *_, rows = await pipe.execute()
        self.leases = registry.decode_leases(rows)

    async def _refresh_flag(self) -> None:
        flag = flags.parse_flag(await self.redis.get(redis_layout.FLAG_KEY))
        if flag == self.flag:
            return
        self.flag = flag
        log.info("flag %s is now %s", flags.FLAG_NAME, flag.to_json().decode())
        for conn in list(self.connections.values()):
            if not flags.is_enabled(flag, conn.user_id, self.cfg.region, conn.carrier):
                conn.close(protocol.FEATURE_DISABLED)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_seconds)
            try:
                await self._renew_lease()
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

    async def _datadog_loop(self) -> None:
        """The log's `vantage.ws.order_tracking.active_connections` gauge, over DogStatsD."""
        from datadog.dogstatsd import DogStatsd

        statsd = DogStatsd(host=self.cfg.datadog_agent_host, port=self.cfg.datadog_agent_port,
                           disable_telemetry=True, origin_detection_enabled=False)
        base_tags = [f"pod:{self.cfg.pod_name}", f"region:{self.cfg.region}"]
        while True:
            try:
                for carrier, count in self._connections_by_carrier().items():
                    statsd.gauge(metrics.DATADOG_ACTIVE_CONNECTIONS, count,
                                 tags=[*base_tags, f"carrier:{carrier}"])
            except OSError as exc:  # the agent is best effort: never let it hurt the pod
                log.warning("datadog agent unreachable: %s", exc)
            await asyncio.sleep(self.cfg.datadog_interval_seconds)


def _ping_payload(sent_at: float) -> bytes:
    """Our ping's application data: its send time, so only its own pong matches it."""
    return struct.pack("!d", sent_at)

