"""The deterministic benchmarks of every hot part: one `Case` per part and implementation.

A case's `make()` builds its inputs once (outside any measurement) and returns `body`, a
call that does one fixed piece of work: the same work every call, no I/O, no clock that
changes the path taken, no randomness (fixed keys and tokens, tokens.json; the runner fixes
PYTHONHASHSEED). bench/instructions/runner.py counts the instructions of `body` under
callgrind; bench/bench_parts.py times the same `body` with pytest-benchmark. `per` is how
many units (messages, connections, timers) one call handles, for the per-unit column.

The twins: every part with a Cython build and a pure-Python twin is measured as both, taken
from the module's IMPLEMENTATIONS (push/twins.py), so one process measures both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# the inputs and watchers of bench/bench_hotpath.py (the gateway's message JSON, a captured RESP
# stream, a real connection on a picows transport to a sink): one source for both
from bench.bench_hotpath import RAW, gateway_message, resp_stream, watcher
from bench.bench_hotpath import _noop as noop
from ordertrack import auth, protocol, redis_layout
from ordertrack.api.tracking import apply_stream, build_document
from ordertrack.devtools.resp import feed
from ordertrack.gateway.carriers import dhl, fedex, ups
from ordertrack.models import Order, StoredEvent
from ordertrack.push import admission, connection, fanout, pubsub_reader, timer_wheel, user_registry
from ordertrack.push.hub import Watch

HERE = Path(__file__).parent
CARRIER_FIXTURES = HERE.parent.parent / "tests" / "fixtures" / "carriers"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Callable[[], object]]
    per: int = 1
    unit: str = "call"
    #: calls per measured round: enough that a round is millions of instructions
    calls: int = 5


# --- the pub/sub reader and the fan-out --------------------------------------------------------

READER_MESSAGES = 200
FANOUT_MESSAGES = 100


def reader_unwatched(impl: str) -> Callable[[], object]:
    cls = pubsub_reader.IMPLEMENTATIONS[impl]
    watched = {f"ord_w{i}": Watch() for i in range(1000)}
    stream = resp_stream([f"ord_{i:08x}" for i in range(READER_MESSAGES)])

    def body():
        reader = cls(watched, noop)
        feed(reader, stream)
        assert reader.discarded == READER_MESSAGES
    return body


def reader_watched(impl: str) -> Callable[[], object]:
    """Reader only: every message is for a watched order, handed to a no-op callback."""
    cls = pubsub_reader.IMPLEMENTATIONS[impl]
    ids = [f"ord_w{i % 100}" for i in range(READER_MESSAGES)]
    watched = {o: Watch() for o in set(ids)}
    stream = resp_stream(ids)

    def body():
        reader = cls(watched, noop)
        feed(reader, stream)
        assert reader.received == READER_MESSAGES and reader.discarded == 0
    return body


def fan_out(impl: str, watchers: int) -> Callable[[], Callable[[], object]]:
    """FanOut.publish of FANOUT_MESSAGES updates (seq 1..) to one order's `watchers`: decode,
    check, frame, offer and send to each. Fresh watchers each call (a watcher takes only newer
    seqs): building them is part of the count, a small constant next to the deliveries."""
    def make():
        cls = fanout.IMPLEMENTATIONS[impl]
        payloads = [gateway_message(seq) for seq in range(1, FANOUT_MESSAGES + 1)]

        def body():
            watch = Watch()
            watch.conns.extend(watcher(impl) for _ in range(watchers))
            out = cls()
            publish = out.publish
            for payload in payloads:
                publish("ord_1", watch, payload)
            assert out.frames == FANOUT_MESSAGES * watchers
        return body
    return make


def frame_building() -> Callable[[], object]:
    """The client frame of a decoded message and its whole WebSocket frame (built once per
    message by the fan-out)."""
    messages = [redis_layout.decode_message(gateway_message(seq)) for seq in range(1, 101)]
    tracking_update, text_frame = protocol.tracking_update, connection.text_frame

    def body():
        for message in messages:
            text_frame(tracking_update(message))
    return body


def message_rule() -> Callable[[], object]:
    """redis_layout.decode_message: the message rule every reader, fan-out and REST read
    applies."""
    payloads = [gateway_message(seq) for seq in range(1, 101)]
    decode = redis_layout.decode_message

    def body():
        for payload in payloads:
            decode(payload)
    return body


# --- admission ---------------------------------------------------------------------------------

TOKENS = json.loads((HERE / "tokens.json").read_text())
BATCH = 256


def token_check(alg: str) -> Callable[[], Callable[[], object]]:
    """auth.Verifier.verify of one token (fixed key and token: tokens.json)."""
    def make():
        pems = TOKENS["RS256"]["public_pem"] + TOKENS["ES256"]["public_pem"]
        verifier = auth.Verifier(pems, issuer="https://auth.vantage.com", audience="tracking")
        token = TOKENS[alg]["token"]

        def body():
            assert verifier.verify(token).user_id == "user_1"
        return body
    return make


def make_tokens() -> dict:
    """How tokens.json was made (run once; the private keys are thrown away)."""
    import jwt

    from ordertrack.devtools.keys import new_key_pems

    claims = {"sub": "user_1", "order_id": "ord_1", "iss": "https://auth.vantage.com",
              "aud": "tracking", "exp": 4102444800, "iat": 1764979200}
    out = {}
    for kind, alg in (("rsa", "RS256"), ("ec", "ES256")):
        private, public = new_key_pems(kind)
        out[alg] = {"public_pem": public.decode(), "token": jwt.encode(claims, private, algorithm=alg)}
    return out


def admission_batch() -> Callable[[], object]:
    """One admission batch of BATCH connections without the round trip: queue register.lua
    and states.lua on a pipeline (Registry.queue_register, admission.queue_states), pack the
    commands as they go on the wire, then split the canned replies per connection
    (user_registry.script_results, admission.decode_states)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:1")  # never connected
    reg = user_registry.UserRegistry(client, "bench-pod", limit=5)
    users = [(f"user_{i}", f"ws_conn_{i:08x}") for i in range(BATCH)]
    orders = [f"ord_{i}" for i in range(BATCH)]
    packer = client.connection_pool.connection_class()
    registered = [[[1] for _ in range(BATCH)]]
    states = [[[1, b"status", b"in_transit", b"carrier", b"dhl", b"seq", b"3"]
               for _ in range(BATCH)]]

    def body():
        pipe = client.pipeline(transaction=False)
        groups = reg.queue_register(pipe, users, 1764979200000)
        state_groups = admission.queue_states(pipe, orders, cluster=False)
        packer.pack_commands([args for args, _options in pipe.command_stack])
        evicted = user_registry.script_results(registered, groups, BATCH)
        decoded = [admission.decode_states(fields) for fields in
                   user_registry.script_results(states, state_groups, BATCH)]
        assert len(evicted) == len(decoded) == BATCH
    return body


# --- the timer wheel ---------------------------------------------------------------------------

TIMERS = 1000


def timer_keys() -> list[str]:
    """The pod's keys are connection objects, hashed by their address: the count would then
    depend on where the allocator put them (dict collisions). Strings hash the same in every
    run under the fixed PYTHONHASHSEED, and cost the wheel the same dict operations."""
    return [f"ws_conn_{i:08x}" for i in range(TIMERS)]


def wheel_schedule_cancel(impl: str) -> Callable[[], Callable[[], object]]:
    def make():
        wheel = timer_wheel.IMPLEMENTATIONS[impl](0.1, 512)
        wheel.advance(1000.0)
        keys = timer_keys()
        deadlines = [1000.0 + (i % 300) * 0.1 for i in range(TIMERS)]

        def body():
            for key, deadline in zip(keys, deadlines, strict=True):
                wheel.schedule(key, deadline)
            for key in keys:
                wheel.cancel(key)
        return body
    return make


def wheel_fire(impl: str) -> Callable[[], Callable[[], object]]:
    """Schedule TIMERS over 30 s, then advance past them all: every one fires."""
    def make():
        cls = timer_wheel.IMPLEMENTATIONS[impl]
        keys = timer_keys()
        deadlines = [1000.0 + (i % 300) * 0.1 for i in range(TIMERS)]

        def body():
            wheel = cls(0.1, 512)
            wheel.advance(1000.0)
            for key, deadline in zip(keys, deadlines, strict=True):
                wheel.schedule(key, deadline)
            assert len(wheel.advance(1031.0)) == TIMERS
        return body
    return make


# --- the REST merge rules and the carriers -----------------------------------------------------

def rest_merge() -> Callable[[], object]:
    """api/tracking.py: the document from the store's order and 20 history events, then 5
    newer stream events merged into it (one late scan among them)."""
    order = Order("ord_1", "user_1", "dhl", "00340434", "in_transit", "2025-10-03T14:20:00Z",
                  "2025-10-05T18:00:00Z", seq=20)
    history = [StoredEvent("ord_1", seq, "in_transit", f"Hub {seq}",
                           f"2025-10-03T{seq // 2:02d}:{(seq % 2) * 30:02d}:00Z")
               for seq in range(1, 21)]
    entries = []
    for seq in range(21, 26):
        hour = 9 if seq == 23 else 14 + seq - 20  # seq 23 is a late, older scan
        payload = redis_layout.encode_message(
            "dhl", seq, "out_for_delivery", "Newark", f"2025-10-03T{hour:02d}:40:00Z",
            "2025-10-04T18:00:00Z", RAW, 1759501320.25)
        entries.append(redis_layout.decode_stream_entry(f"{seq}-0", {b"msg": payload}))

    def body():
        doc = build_document(order, history)
        assert apply_stream(doc, entries)["seq"] == 25
    return body


CARRIER_ANSWERS = {
    "dhl": (dhl.parse_response, "dhl_linked_out_for_delivery.json", ["JD014600006281230704"]),
    "fedex": (fedex.parse_response, "fedex_repeated_scan.json", None),
    "ups": (ups.parse_response, "ups_out_for_delivery.json", None),
}


def carrier_answer(carrier: str) -> Callable[[], Callable[[], object]]:
    """One real-shaped answer (tests/fixtures/carriers) parsed from its bytes, for every
    number it answers."""
    def make():
        parse, fixture, numbers = CARRIER_ANSWERS[carrier]
        body_bytes = (CARRIER_FIXTURES / fixture).read_bytes()
        if numbers is None:
            numbers = list(answered_numbers(carrier, body_bytes))

        def body():
            assert parse(body_bytes, numbers)
        return body
    return make


def answered_numbers(carrier: str, body: bytes) -> list[str]:
    data = json.loads(body)
    if carrier == "fedex":
        return [r["trackingNumber"] for r in data["output"]["completeTrackResults"]]
    return [data["trackResponse"]["shipment"][0]["package"][0]["trackingNumber"]]


# --- the list --------------------------------------------------------------------------------

def cases() -> list[Case]:
    out: list[Case] = []
    for impl in sorted(pubsub_reader.IMPLEMENTATIONS):
        out.append(Case(f"reader_unwatched[{impl}]", lambda impl=impl: reader_unwatched(impl),
                        READER_MESSAGES, "message"))
        out.append(Case(f"reader_watched[{impl}]", lambda impl=impl: reader_watched(impl),
                        READER_MESSAGES, "message"))
    for impl in sorted(fanout.IMPLEMENTATIONS):
        for n in (1, 10):
            out.append(Case(f"fanout_{n}_watchers[{impl}]", fan_out(impl, n), FANOUT_MESSAGES,
                            "message"))
    out.append(Case("frame_building", frame_building, 100, "message"))
    out.append(Case("message_rule", message_rule, 100, "message"))
    for alg in ("RS256", "ES256"):
        out.append(Case(f"token_check[{alg}]", token_check(alg), 1, "token", calls=10))
    out.append(Case("admission_batch", admission_batch, BATCH, "connection"))
    for impl in sorted(timer_wheel.IMPLEMENTATIONS):
        out.append(Case(f"wheel_schedule_cancel[{impl}]", wheel_schedule_cancel(impl), TIMERS,
                        "timer"))
        out.append(Case(f"wheel_fire[{impl}]", wheel_fire(impl), TIMERS, "timer"))
    out.append(Case("rest_merge", rest_merge, 1, "document", calls=20))
    for carrier in sorted(CARRIER_ANSWERS):
        out.append(Case(f"carrier_answer[{carrier}]", carrier_answer(carrier), 1, "answer",
                        calls=20))
    return out
