"""The Redis layout: every key and channel name, and the encoding of everything in them.

Namespaces `order:tracking:*`, `ws:*` and `gateway:*`. A key that a Lua script touches together
with others carries their shared hash tag as a literal `{...}` (Redis Cluster puts a name in the
slot of what its first braces hold), so the same names work on one server, behind Sentinel and
on a cluster (docs/redis.md). Channels are not keys: they carry no tag.

Per order (tag: the order id):
- `order:tracking:{ORDER_ID}` (channel, no braces): the message JSON `status, location,
  timestamp, estimated_delivery, carrier, raw_carrier_response, seq, published_at`; the pods'
  `PSUBSCRIBE order:tracking:*` takes the order id from the channel's suffix.
- `order:tracking:shard:{ORDER_ID}` (shard channel, braces literal): the same message,
  SPUBLISHed when `PUBSUB_MODE` is `sharded` (or `both`); it shares the order's hash tag, so
  publish.lua's SPUBLISH stays in its keys' slot, and a pod SSUBSCRIBEs to it on the node that
  owns that slot (push/shard_subscriptions.py).
- `order:tracking:state:{ORDER_ID}`: hash of the order's current state (`status, location,
  timestamp, estimated_delivery, carrier, seq`), status by the order-state rule.
- `order:tracking:stream:{ORDER_ID}`: stream of the order's recent messages; the entry ID is
  `{seq}-0` (so `XRANGE key {last_seq + 1}-0 +` is "everything after last_seq"), the field
  `msg` holds the published JSON. The gateway writes all three in one Lua call.
- `order:tracking:rest:{ORDER_ID}`: the REST answer, cached briefly by the API.
Per user and pod: `ws:user:{USER_ID}` (ZSET of `POD_ID|CONNECTION_ID`), `ws:pods` (ZSET of
pod id -> lease expiry, epoch ms: the pods' liveness), channels `ws:control:POD_ID` and `ws:control:all` (control messages
`{"op": "evict", "connection_id": ...}` and `{"op": "flag"}`), `ws:flag:realtime_order_tracking`.
Per carrier (tag: the carrier): `gateway:quota:{CARRIER}` and `gateway:quota:{CARRIER}:paused`,
`gateway:polled:{CARRIER}`, `gateway:pace:{CARRIER}` and the claims
`gateway:claim:{CARRIER}:ORDER_ID`; `gateway:pushed:{CARRIER}` (scans the carrier pushed) and
`gateway:subscribed:{CARRIER}` (its push subscriptions).
Per rollout variant (tag: the variant, so one PFCOUNT unites the days):
`rollout:{VARIANT}:orders:DAY` (HyperLogLog of order ids), `rollout:{VARIANT}:views:DAY`,
`rollout:{VARIANT}:stays:DAY` (hash `reported`, `bounced`); `rollout:view:VIEW_ID` (a view
awaiting its stay beacon).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from ordertrack import config
from ordertrack import malformed as why
from ordertrack.flags import FLAG_NAME
from ordertrack.models import StoredEvent
from ordertrack.protocol import valid_seq


def tagged(prefix: str, tag: str, suffix: str = "") -> str:
    """`prefix{tag}suffix`: a key in the hash slot of `tag`."""
    return f"{prefix}{{{tag}}}{suffix}"


# --- per order -----------------------------------------------------------------------------------
CHANNEL_PREFIX = "order:tracking:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
STATE_PREFIX = "order:tracking:state:"
STREAM_PREFIX = "order:tracking:stream:"
REST_CACHE_PREFIX = "order:tracking:rest:"


SHARD_CHANNEL_PREFIX = "order:tracking:shard:"
#: what the pub/sub reader matches an `smessage`'s channel against: this, then `}` at the end
SHARD_CHANNEL_PREFIX_BYTES = (SHARD_CHANNEL_PREFIX + "{").encode()


def channel(order_id: str) -> str:
    return CHANNEL_PREFIX + order_id


#: an order's keys by its id: the shard channel (in its hash tag's slot, like its state and
#: stream), the state hash, the stream, the cached REST answer
shard_channel = partial(tagged, SHARD_CHANNEL_PREFIX)
state = partial(tagged, STATE_PREFIX)
stream = partial(tagged, STREAM_PREFIX)
rest_cache = partial(tagged, REST_CACHE_PREFIX)


def shard_channel_order(channel_name: bytes) -> str | None:
    """The order id of a shard channel's name (None when it is not one): the inverse of
    `shard_channel`."""
    head = SHARD_CHANNEL_PREFIX_BYTES
    if not (channel_name.startswith(head) and channel_name.endswith(b"}")):
        return None
    try:
        return channel_name[len(head):-1].decode()
    except UnicodeDecodeError:
        return None


def publish_channels(order_id: str, mode: str) -> tuple[str, str]:
    """publish.lua's classic channel and shard channel for `PUBSUB_MODE` (`''`: not that way)."""
    classic = channel(order_id) if mode != config.PUBSUB_SHARDED else ""
    shard = shard_channel(order_id) if mode != config.PUBSUB_PATTERN else ""
    return classic, shard


def after_seq(seq: int) -> str:
    """The first stream ID after `seq` (XRANGE's start for "everything after seq")."""
    return f"{seq + 1}-0"


# --- per user and pod ----------------------------------------------------------------------------
USER_PREFIX = "ws:user:"
PODS_KEY = "ws:pods"
CONTROL_PREFIX = "ws:control:"
CONTROL_ALL = CONTROL_PREFIX + "all"
FLAG_KEY = "ws:flag:" + FLAG_NAME


#: a user's registry ZSET by the user id
user = partial(tagged, USER_PREFIX)


def control(pod_id: str) -> str:
    return CONTROL_PREFIX + pod_id


def member(pod_id: str, connection_id: str) -> str:
    """A slot in `ws:user:{USER_ID}`."""
    return f"{pod_id}|{connection_id}"


def split_member(value: bytes | str) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    pod_id, _, connection_id = text.rpartition("|")
    return pod_id, connection_id


# --- per carrier ---------------------------------------------------------------------------------
QUOTA_PREFIX = "gateway:quota:"
POLLED_PREFIX = "gateway:polled:"
PACE_PREFIX = "gateway:pace:"
CLAIM_PREFIX = "gateway:claim:"
PUSHED_PREFIX = "gateway:pushed:"
SUBSCRIBED_PREFIX = "gateway:subscribed:"


#: a carrier's keys by its name
quota = partial(tagged, QUOTA_PREFIX)
quota_paused = partial(tagged, QUOTA_PREFIX, suffix=":paused")
polled = partial(tagged, POLLED_PREFIX)
pace = partial(tagged, PACE_PREFIX)
#: ZSET order_id -> when the carrier last pushed a scan of it (`ordertrack ingest`)
pushed = partial(tagged, PUSHED_PREFIX)
#: ZSET tracking number -> when the carrier's push subscription for it ends
subscribed = partial(tagged, SUBSCRIBED_PREFIX)


def claim_prefix(carrier: str) -> str:
    """The claims of a carrier's orders are this prefix + the order id (claim.lua appends it)."""
    return tagged(CLAIM_PREFIX, carrier, ":")


def claim(carrier: str, order_id: str) -> str:
    return claim_prefix(carrier) + order_id


# --- the rollout's page views and stays (ordertrack/rollout.py; tag: the variant) -------------
ROLLOUT_PREFIX = "rollout:"
ROLLOUT_VIEW_PREFIX = "rollout:view:"


def rollout_orders(variant: str, day: str) -> str:
    """HyperLogLog of the order ids whose page was viewed in `variant` on UTC `day`."""
    return tagged(ROLLOUT_PREFIX, variant, f":orders:{day}")


def rollout_views(variant: str, day: str) -> str:
    """Counter of the page views of `variant` on `day`."""
    return tagged(ROLLOUT_PREFIX, variant, f":views:{day}")


def rollout_stays(variant: str, day: str) -> str:
    """Hash `reported`, `bounced`: stays reported by the views of `variant` on `day`."""
    return tagged(ROLLOUT_PREFIX, variant, f":stays:{day}")


def rollout_pending_view(view_id: str) -> str:
    """A view waiting for its stay beacon: its variant, for a day at most."""
    return ROLLOUT_VIEW_PREFIX + view_id


# --- the message (channel and stream) ------------------------------------------------------------
class MalformedMessage(ValueError):
    """A message or stream entry nobody may act on; `reason` is one of malformed.py's."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode_message(carrier: str, seq: int, status: str, location: str | None, timestamp: str,
                   estimated_delivery: str | None, raw: dict[str, Any] | None,
                   published_at: float) -> bytes:
    """The channel/stream message JSON (DESIGN.md, "Redis")."""
    return orjson.dumps({
        "status": status,
        "location": location,
        "timestamp": timestamp,
        "estimated_delivery": estimated_delivery,
        "carrier": carrier,
        "raw_carrier_response": raw,
        "seq": seq,
        "published_at": published_at,
    })


#: the client fields a message must carry, as strings; the others (`location`,
#: `estimated_delivery`, `carrier`) may be null or absent (then null for the client)
STRING_FIELDS = ("status", "timestamp")


def decode_message(payload: bytes | str) -> dict[str, Any]:
    """THE rule for a message, on the channel and in a stream entry alike (the gateway writes
    it with `encode_message`): MalformedMessage with the first reason that applies, checked in
    this order: at most `MAX_PAYLOAD_BYTES`, JSON, an object, an integer `seq` in 1..2**53-1,
    `status` and `timestamp` present (MISSING_FIELD) and strings (BAD_FIELD); the other client
    fields may be absent, and a client then gets them as null (a publisher that is not our
    gateway may leave out what it does not know).
    `published_at` is optional (the latency metric needs it, a client never sees it).

    The fan-out (push/fanout.py, compiled and interpreted alike) decodes with its `_decode`,
    the hot path's copy of this rule and applies the same checks in the same order (tests/test_message_rule.py)."""
    if len(payload) > why.MAX_PAYLOAD_BYTES:
        raise MalformedMessage(why.PAYLOAD_TOO_LARGE)
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedMessage(why.NOT_JSON) from None
    if type(message) is not dict:
        raise MalformedMessage(why.NOT_OBJECT)
    seq = message.get("seq")
    if not (valid_seq(seq) and seq >= 1):
        raise MalformedMessage(why.BAD_SEQ, repr(seq))
    for field in STRING_FIELDS:
        if field not in message:
            raise MalformedMessage(why.MISSING_FIELD, field)
    for field in STRING_FIELDS:
        if type(message[field]) is not str:
            raise MalformedMessage(why.BAD_FIELD, f"{field} is not a string")
    return message


@dataclass(frozen=True, slots=True)
class StreamEntry:
    seq: int
    #: the published JSON, as written (what the channel carried)
    payload: bytes
    message: dict[str, Any]

    def event(self, order_id: str) -> StoredEvent:
        """The entry as the store holds the same event."""
        m = self.message
        return StoredEvent(order_id, self.seq, m["status"], m.get("location"), m["timestamp"],
                           m.get("estimated_delivery"))


def decode_stream_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> StreamEntry:
    """One XRANGE entry (`{seq}-0`, field `msg`); MalformedMessage when unusable."""
    raw = fields.get(b"msg", fields.get("msg"))
    if raw is None:
        raise MalformedMessage(why.MISSING_FIELD, "msg")
    payload = raw.encode() if isinstance(raw, str) else bytes(raw)
    message = decode_message(payload)
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    head, _, _ = text.partition("-")
    if not head.isdigit() or int(head) != message["seq"]:
        raise MalformedMessage(why.BAD_SEQ, f"entry {text} holds seq {message['seq']}")
    return StreamEntry(message["seq"], payload, message)


def decode_stream(entries: Iterable[tuple[Any, Mapping[Any, Any]]], on_skip=None
                  ) -> list[StreamEntry]:
    """XRANGE's answer, without the unusable entries (each reported as
    `on_skip(entry_id, MalformedMessage)`)."""
    decoded = []
    for entry_id, fields in entries:
        try:
            decoded.append(decode_stream_entry(entry_id, fields))
        except MalformedMessage as exc:
            if on_skip is not None:
                on_skip(entry_id, exc)
    return decoded


# --- the state hash ------------------------------------------------------------------------------
STATE_FIELDS = ("status", "location", "timestamp", "estimated_delivery", "carrier", "seq")


def state_seq(raw: bytes | str | int | None) -> int:
    """The state hash's `seq` (HGET's answer): 0 when missing or not a valid seq (a bogus value
    must not make a reader treat every later update as already seen)."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("ascii", "replace")
    try:
        seq = int(raw) if raw else 0
    except ValueError:
        return 0
    return seq if valid_seq(seq) else 0


@dataclass(frozen=True, slots=True)
class OrderStateHash:
    """`order:tracking:state:{ORDER_ID}` as read (empty fields are None)."""

    status: str | None = None
    location: str | None = None
    timestamp: str | None = None
    estimated_delivery: str | None = None
    carrier: str | None = None
    seq: int = 0


def decode_state(raw: Mapping[Any, Any]) -> OrderStateHash:
    """HGETALL's answer (bytes or str); a missing hash is the empty state."""
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

    def field(name: str) -> str | None:
        value = text.get(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value or None

    return OrderStateHash(field("status"), field("location"), field("timestamp"),
                          field("estimated_delivery"), field("carrier"),
                          state_seq(text.get("seq")))


def state_fields(status: str, location: str | None, timestamp: str | None,
                 estimated_delivery: str | None, carrier: str) -> list[str]:
    """The hash's text fields in publish.lua's ARGV order ('' for None)."""
    return [value or "" for value in (status, location, timestamp, estimated_delivery, carrier)]


# --- control messages (ws:control:*) -------------------------------------------------------------
EVICT = "evict"
FLAG = "flag"
#: the subscription watchdog's probe, published by a pod on its own control channel
PROBE = "probe"


@dataclass(frozen=True, slots=True)
class ControlMessage:
    op: str
    #: the connection to close with 4001 (`evict` only)
    connection_id: str | None = None


class MalformedControl(ValueError):
    """A control message the pod must ignore (the message says why)."""


def encode_evict(connection_id: str) -> bytes:
    """register.lua builds the same JSON for other pods' connections (op passed as ARGV)."""
    return orjson.dumps({"op": EVICT, "connection_id": connection_id})


def encode_flag_changed() -> bytes:
    """Every pod re-reads the flag document at once."""
    return orjson.dumps({"op": FLAG})


def encode_probe() -> bytes:
    """Comes back on the pod's subscription: proof that it is live (push/subscription.py)."""
    return orjson.dumps({"op": PROBE})


def decode_control(payload: bytes | str) -> ControlMessage:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedControl(f"unreadable control message {payload[:100]!r}") from None
    op = message.get("op") if isinstance(message, dict) else None
    if op == EVICT:
        connection_id = message.get("connection_id")
        if not isinstance(connection_id, str):
            raise MalformedControl(f"evict without a connection_id string: {payload[:100]!r}")
        return ControlMessage(EVICT, connection_id)
    if op in (FLAG, PROBE):
        return ControlMessage(op)
    raise MalformedControl(f"control message with unknown op: {payload[:100]!r}")
