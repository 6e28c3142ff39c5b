"""Admission after the 101: register, ack, replay, resume; in batches, never blocking the loop.

A new connection is queued by `Admission.add`; the admission loop takes up to
`ADMISSION_BATCH` of them and sends ONE pipeline (one round trip) for the batch: one
`register.lua` call registering every connection of the batch, one `states.lua` call reading
every one's state hash for its `connection_ack` (one reply to parse, not one HGETALL each: on a
Redis Cluster both are one call per hash slot), and, for a connection that asked to resume,
its stream after `last_seq`.
Then each connection gets its ack, its replay and the updates held meanwhile (the rules are
in push/delivery.py). A Redis error on one order's or one user's keys fails that connection
alone (4002, or `RESUME_UNAVAILABLE` for its history), never its batch.

With a fast Redis the next batch waits for the one under way (the queue fills meanwhile: one
round trip and one pipeline for many connections); with a slow one (a batch out longer than
`SETTLE_WAIT_SECONDS`) up to `MAX_IN_FLIGHT` batches are under way at once, paced over the
round trip, so a slow Redis does not make one batch wait for the round trip of the one before
it. Whatever Redis does, a connection not acked
within REDIS_SUBSCRIBE_TIMEOUT_SECONDS of its 101 is closed 4002 (push/ack_deadline.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from importlib.resources import files

from redis.exceptions import RedisError

from ordertrack import protocol, redis_layout
from ordertrack.push import delivery, user_registry
from ordertrack.push.ack_deadline import AckDeadlines
from ordertrack.push.connection import NO_SEQ
from ordertrack.push.streams import skip_entry, stream_after

log = logging.getLogger("ordertrack.push")

ADMISSION_BATCH = 256
#: admission round trips under way at once (the pod's command pool holds 32 connections)
MAX_IN_FLIGHT = 8
#: how often connections that expired while no subscription is live leave the queue
PRUNE_SECONDS = 1.0
#: batch gaps shorter than this are not slept (a fast Redis: `_settle` waits instead)
MIN_GAP_SECONDS = 0.001
#: a fast Redis: the next batch waits for the one under way at most this long (or until the
#: queue holds a full batch); longer, and Redis counts as slow: batches overlap, paced
#: by `batch_gap`. (Starting every batch at once with a fast Redis made batches of one or two
#: connections: about a third more pod CPU per admitted connection, in per-batch costs.)
SETTLE_WAIT_SECONDS = MIN_GAP_SECONDS * MAX_IN_FLIGHT
RESUME_FAILED = protocol.error("RESUME_UNAVAILABLE", "resume failed; refetch over REST")
STATES_LUA = files("ordertrack.push").joinpath("states.lua").read_text()
STATES_SHA = hashlib.sha1(STATES_LUA.encode()).hexdigest()


def batch_gap(round_trip: float, oldest_in_flight: float) -> float:
    """How long the next batch waits after one started: the round trip (the last one's, or
    the age of the oldest still under way, whichever is longer) spread over the slots, so the
    slots last one round trip and a connection waits at most that share of it for its batch
    (never for a slot: a whole round trip). 0 when that is too short to matter."""
    gap = max(round_trip, oldest_in_flight) / MAX_IN_FLIGHT
    return gap if gap >= MIN_GAP_SECONDS else 0.0


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def queue_states(pipe, order_ids: list[str], cluster: bool) -> list[list[int]]:
    """Add the `states.lua` calls reading the orders' state hashes to `pipe` (one, or one per
    hash slot on a cluster); returns the groups, for `user_registry.script_results`."""
    keys = [redis_layout.state(order_id) for order_id in order_ids]
    groups = user_registry.slot_groups(keys, cluster)
    for group in groups:
        pipe.execute_command("EVALSHA", STATES_SHA, len(group), *(keys[i] for i in group))
    return groups


def decode_states(fields: list) -> redis_layout.OrderStateHash:
    """One `states.lua` answer (HGETALL's flat field, value list) -> the order's state."""
    pairs = iter(fields)
    return redis_layout.decode_state(dict(zip(pairs, pairs, strict=False)))


class Admission:
    """Given what it needs: the command client, the per-user registry, the hub (the index of
    open connections: evictions land there), the flags (the kill switch, by carrier), the
    subscription's `live` event, `spawn` for background work, the loop, how long a connection
    may wait for its ack (REDIS_SUBSCRIBE_TIMEOUT_SECONDS), this pod's id, and
    `before_admit(batch) -> batch` (PUBSUB_MODE=sharded: push/shard_subscriptions.py subscribes
    a batch's orders first)."""

    def __init__(self, redis, user_registry, hub, flags, live: asyncio.Event, spawn, loop,
                 subscribe_timeout: float, pod_id: str, before_admit=None):
        self.redis = redis
        self.user_registry = user_registry
        self.hub = hub
        self.flags = flags
        self.live = live
        self.spawn = spawn
        self.loop = loop
        self.subscribe_timeout = subscribe_timeout
        self.pod_id = pod_id
        self.before_admit = before_admit
        self.pending: deque = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        #: the last admission round trip (s), and when each batch under way started
        self.round_trip = 0.0
        self._in_flight: dict[int, float] = {}
        #: resolved when a batch under way finishes or the queue fills a batch (`_settle`)
        self._settled: asyncio.Future | None = None
        self.deadlines = AckDeadlines(loop, subscribe_timeout,
                                      self._expire)

    def add(self, conn) -> None:
        self.pending.append(conn)
        self.deadlines.add(conn)
        self._wakeup.set()
        if self._settled is not None and len(self.pending) >= ADMISSION_BATCH:
            _resolve(self._settled)

    def wake(self) -> None:
        """The subscription went live: admit whoever waits for it."""
        self._wakeup.set()
        self.spawn(self.warm())

    async def warm(self) -> None:
        """Open the pool connections the batches in flight need before they are needed: a new
        one costs its own round trips first (redis-py's CLIENT SETINFO), which, with Redis far
        away, would make a batch on it miss the deadline."""
        redis, loop = self.redis, self.loop
        started = loop.time()
        replies = await asyncio.gather(*(redis.ping() for _ in range(MAX_IN_FLIGHT)),
                                       return_exceptions=True)
        if not any(isinstance(reply, BaseException) for reply in replies):
            self.round_trip = loop.time() - started

    def _expire(self, conns: list) -> None:
        """Not acked within REDIS_SUBSCRIBE_TIMEOUT_SECONDS of the 101: 4002."""
        live = self.live.is_set()
        why = "tracking registry unavailable" if live else "tracking subscription unavailable"
        log.warning("%d connections not admitted within %ss: closing them 4002 (%s)", len(conns),
                    self.deadlines.limit, why)
        for conn in conns:
            conn.close(protocol.INTERNAL_ERROR, why)

    # --- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        live = self.live
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.pending:
                if not live.is_set():
                    await self._wait_for_subscription()
                    continue
                # a batch fills up while every slot is busy: under load, fewer, bigger batches
                await self._slots.acquire()
                batch: list = []
                while self.pending and len(batch) < ADMISSION_BATCH:
                    conn = self.pending.popleft()
                    if not conn.cleaned and conn.close_reason is None:
                        batch.append(conn)
                if not batch:
                    self._slots.release()
                    continue
                self.spawn(self._admit_batch(batch))
                gap = batch_gap(self.round_trip, self._oldest_in_flight())
                if gap:
                    await asyncio.sleep(gap)
                elif len(self.pending) < ADMISSION_BATCH:
                    await self._settle()

    async def _settle(self) -> None:
        """A fast Redis: wait until a batch under way finishes, the queue fills a batch, or
        SETTLE_WAIT_SECONDS pass (Redis is then slow, and `batch_gap` paces the overlap)."""
        waiter = self._settled = self.loop.create_future()
        timer = self.loop.call_later(SETTLE_WAIT_SECONDS, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._settled = None

    def _oldest_in_flight(self) -> float:
        """Seconds the oldest batch under way has waited for Redis (0: none)."""
        if not self._in_flight:
            return 0.0
        return self.loop.time() - min(self._in_flight.values())

    async def _admit_batch(self, batch: list) -> None:
        key = id(batch)
        self._in_flight[key] = self.loop.time()
        try:
            await self.admit(batch)
        except Exception:  # noqa: BLE001 - one bad batch must not stop all admissions
            log.exception("admission of %d connections failed", len(batch))
            for conn in batch:
                if not conn.acked:
                    conn.close(protocol.INTERNAL_ERROR, "admission failed")
        finally:
            del self._in_flight[key]
            self._slots.release()
            if self._settled is not None:
                _resolve(self._settled)

    async def _wait_for_subscription(self) -> None:
        """Wait for a live PSUBSCRIBE (the deadline closes whoever waits too long: 4002); the
        closed ones leave the queue meanwhile, so an outage does not pile them up."""
        live = self.live
        while self.pending and not live.is_set():
            try:
                await asyncio.wait_for(live.wait(), PRUNE_SECONDS)
            except TimeoutError:
                self.pending = deque(conn for conn in self.pending
                                     if not conn.cleaned and conn.close_reason is None)

    # --- one batch: one round trip -----------------------------------------------------------------
    async def admit(self, batch: list) -> None:
        if self.before_admit is not None:  # PUBSUB_MODE=sharded: subscribed before the state is read
            batch = await self.before_admit(batch)
            if not batch:
                return
        pipe = self.redis.pipeline(transaction=False)
        # a `resume` may arrive while the pipeline runs: remember what was asked of Redis
        resume_from = [conn.resume_seq for conn in batch]
        groups = self.user_registry.queue_register(
            pipe, [(conn.user_id, conn.connection_id) for conn in batch], int(time.time() * 1000))
        state_groups = queue_states(pipe, [conn.order_id for conn in batch], self.user_registry.cluster)
        for conn, last_seq in zip(batch, resume_from, strict=True):
            if last_seq is not None:
                stream_after(pipe, conn.order_id, last_seq)
        try:
            # a key's error (one order's, one user's) is that connection's alone: see below
            started = self.loop.time()
            results = await pipe.execute(raise_on_error=False)
            self.round_trip = self.loop.time() - started
        except RedisError as exc:
            log.warning("admission of %d connections failed: %s; retrying", len(batch), exc)
            # our registrations may or may not have landed: put them back, retry shortly (until
            # their deadline, push/ack_deadline.py)
            await asyncio.sleep(0.1)
            self.pending.extendleft(reversed(batch))
            self._wakeup.set()
            return
        scripts = len(groups) + len(state_groups)
        if user_registry.needs_script(results[:scripts]):
            # a node without the scripts (a promoted replica): load them, admit the batch again
            # (registering a connection twice is harmless: same member)
            await self.load_scripts()
            self.pending.extendleft(reversed(batch))
            self._wakeup.set()
            return
        registered = user_registry.script_results(results[:len(groups)], groups, len(batch))
        states = user_registry.script_results(results[len(groups):scripts], state_groups, len(batch))
        index = scripts
        for conn, last_seq, evicted, state in zip(batch, resume_from, registered, states,
                                                  strict=True):
            entries = None
            if last_seq is not None:
                entries = results[index]
                index += 1
            if isinstance(evicted, Exception):
                log.warning("registering %s failed: %s", conn.connection_id, evicted)
                conn.close(protocol.INTERNAL_ERROR, "registration failed")
                continue
            conn.registered = True
            if conn.cleaned:  # it went away while we registered it: free the slot again
                self.user_registry.free_slot(conn.user_id, conn.connection_id)
            for slot in evicted:
                pod_id, connection_id = redis_layout.split_member(slot)
                if pod_id == self.pod_id:
                    victim = self.hub.connections.get(connection_id)
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
                conn.backlog = [(NO_SEQ, RESUME_FAILED), *(conn.backlog or ())]
                if conn.resume_seq == last_seq:
                    conn.resume_seq = None
                last_seq = entries = None
            self.acknowledge(conn, decode_states(state), last_seq, entries)

    async def load_scripts(self) -> None:
        """SCRIPT LOAD register.lua and states.lua (on a cluster: on every master)."""
        await self.user_registry.load_script()
        await self.redis.script_load(STATES_LUA)

    def acknowledge(self, conn, state: redis_layout.OrderStateHash, fetched_from: int | None,
                    entries) -> None:
        self.hub.set_carrier(conn, state.carrier)
        if not self.flags.realtime_enabled(conn.user_id, conn.carrier, conn.client_class):
            conn.close(protocol.FEATURE_DISABLED)
            return
        state_seq = state.seq
        watch = self.hub.watches.get(conn.order_id)
        if watch is not None and state_seq > watch.seq:
            watch.seq = state_seq
        conn.sent_seq = state_seq
        self.deadlines.done(conn)
        conn.send(protocol.connection_ack(conn.connection_id, conn.order_id, state.carrier,
                                          state.status, state_seq))
        resume_seq, conn.resume_seq = conn.resume_seq, None
        if fetched_from is not None and resume_seq == fetched_from:
            self._replay(conn, resume_seq, state_seq, entries or [])
        elif resume_seq is not None:
            # asked for while we were registering it: fetch that replay now (updates stay held)
            self.resume(conn, resume_seq)
            return
        self._flush_backlog(conn)

    # --- resume -------------------------------------------------------------------------------------
    def resume(self, conn, last_seq: int) -> None:
        """A resume on an admitted connection: live updates are held until the replay is out."""
        delivery.hold(conn)
        self.spawn(self._resume(conn, last_seq))

    async def _resume(self, conn, last_seq: int) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(redis_layout.state(conn.order_id), "seq")
            stream_after(pipe, conn.order_id, last_seq)
            state_seq, entries = await pipe.execute()
        except RedisError as exc:
            log.warning("resume for %s failed: %s", conn.connection_id, exc)
            if not conn.cleaned:
                conn.send(RESUME_FAILED)
                self._flush_backlog(conn)
            return
        if conn.cleaned or conn.close_reason is not None:
            return
        self._replay(conn, last_seq, redis_layout.state_seq(state_seq), entries)
        self._flush_backlog(conn)

    def _replay(self, conn, last_seq: int, state_seq: int, entries) -> None:
        decoded = redis_layout.decode_stream(entries, skip_entry(conn.order_id))
        for frame in delivery.replay(conn, last_seq, state_seq, decoded):
            conn.send(frame)

    @staticmethod
    def _flush_backlog(conn) -> None:
        for frame in delivery.flush_backlog(conn):
            if conn.close_reason is not None:  # the last write made it a slow consumer
                return
            conn.send(frame)
