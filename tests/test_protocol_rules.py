"""The pure protocol rules: paths, client messages, frames, credentials, tokens, the flag, config."""

from __future__ import annotations

import time

import jwt
import orjson
import pytest

from ordertrack import auth, config, flags, protocol
from tests.support import generate_keys


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("k"))


@pytest.mark.parametrize("path,order", [
    ("/ws/orders/ord_1a2b3c4d5e6f/track", "ord_1a2b3c4d5e6f"),
    ("/ws/orders//track", None),
    ("/ws/orders/a/b/track", None),
    ("/ws/orders/ord_1/tracking", None),
    ("/healthz", None),
    ("/ws/orders/" + "x" * 200 + "/track", None),
])
def test_order_id_from_path(path, order):
    assert protocol.order_id_from_path(path) == order


def test_client_messages_are_classified():
    assert protocol.parse_client_message(b'{"event":"heartbeat"}').kind == "heartbeat"
    resume = protocol.parse_client_message(b'{"event":"resume","data":{"last_seq":12}}')
    assert (resume.kind, resume.last_seq) == ("resume", 12)
    for payload, code in [
        (b"{nope", "INVALID_JSON"),
        (b"[1,2]", "INVALID_MESSAGE"),
        (b'{"data":{}}', "INVALID_MESSAGE"),
        (b'{"event":"resume","data":{"last_seq":-1}}', "INVALID_MESSAGE"),
        (b'{"event":"resume","data":{"last_seq":true}}', "INVALID_MESSAGE"),
        (b'{"event":"resume"}', "INVALID_MESSAGE"),
        (b'{"event":"drop_tables"}', "UNKNOWN_EVENT"),
    ]:
        message = protocol.parse_client_message(payload)
        assert (message.kind, message.error_code) == ("invalid", code), payload


def test_tracking_update_frame_keeps_only_customer_fields():
    frame = orjson.loads(protocol.tracking_update({
        "status": "in_transit", "location": "Newark NJ", "timestamp": "2025-10-03T14:02:00Z",
        "estimated_delivery": "2025-10-04T18:00:00Z", "carrier": "dhl", "seq": 3,
        "raw_carrier_response": {"secret": 1}, "published_at": 1.5}))
    assert frame == {"event": "tracking_update", "data": {
        "status": "in_transit", "location": "Newark NJ", "timestamp": "2025-10-03T14:02:00Z",
        "estimated_delivery": "2025-10-04T18:00:00Z", "carrier": "dhl", "seq": 3}}


def test_ack_for_an_order_without_state_yet():
    ack = orjson.loads(protocol.connection_ack("ws_conn_01234567", "ord_1", None, None, 0))
    assert ack["data"] == {"connection_id": "ws_conn_01234567", "order_id": "ord_1",
                           "carrier": None, "current_status": None, "seq": 0}


def test_credentials_from_headers():
    assert auth.credentials_from_headers({"authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
    offered = {"sec-websocket-protocol": "vantage-tracking-v1, bearer.abc.def.ghi"}
    assert auth.credentials_from_headers(offered) == "abc.def.ghi"
    for headers, query in [({}, ""), ({"authorization": "Basic Zm9v"}, ""),
                           ({"authorization": "Bearer x"}, "token=x"), ({}, "access_token=x")]:
        with pytest.raises(auth.AuthError) as info:
            auth.credentials_from_headers(headers, query)
        assert info.value.status == 401


def test_verifier_checks_signature_expiry_issuer_audience(key_pair, tmp_path):
    verifier = auth.Verifier(key_pair.public_pem.decode() + key_pair.ec_public_pem.decode(),
                             issuer="https://auth.vantage.com", audience="tracking")
    good = key_pair.token("u1", "ord_1", iss="https://auth.vantage.com", aud="tracking")
    claims = verifier.verify(good)
    assert claims.user_id == "u1" and claims.order_ids == {"ord_1"}
    es = key_pair.token("u1", ["a", "b"], alg="ES256", iss="https://auth.vantage.com", aud="tracking")
    assert verifier.verify(es).order_ids == {"a", "b"}

    bad = [
        key_pair.token("u1", "ord_1", iss="https://evil", aud="tracking"),
        key_pair.token("u1", "ord_1", iss="https://auth.vantage.com", aud="other"),
        key_pair.token("u1", "ord_1", ttl=-5, iss="https://auth.vantage.com", aud="tracking"),
        generate_keys(tmp_path).token("u1", "ord_1", iss="https://auth.vantage.com", aud="tracking"),
        jwt.encode({"sub": "u", "exp": time.time() + 60}, "s" * 32, "HS256"),
        "garbage",
    ]
    for token in bad:
        with pytest.raises(auth.AuthError) as info:
            verifier.verify(token)
        assert info.value.code == "UNAUTHORIZED"


def test_authorize_needs_the_order_in_the_claims():
    claims = auth.Claims("u1", frozenset({"ord_1"}), time.time() + 60)
    auth.authorize(claims, "ord_1")
    with pytest.raises(auth.AuthError) as info:
        auth.authorize(claims, "ord_other_user_order")
    assert (info.value.status, info.value.message) == (403, "You can only track orders you own")


def test_flag_evaluation():
    assert flags.is_enabled(flags.parse_flag(None), "anyone")
    assert not flags.is_enabled(flags.parse_flag(b'{"enabled": false}'), "anyone")
    rollout = flags.parse_flag(b'{"enabled": true, "percentage": 5, "regions": ["us-east-1"], "carriers": ["dhl"]}')
    assert not flags.is_enabled(rollout, "u", region="eu-west-1")
    users = [f"user{i}" for i in range(4000)]
    share = sum(flags.is_enabled(rollout, u, "us-east-1", "dhl") for u in users) / len(users)
    assert 0.03 < share < 0.07
    assert not any(flags.is_enabled(rollout, u, "us-east-1", "ups") for u in users)
    assert flags.parse_flag(b"not json") == flags.Flag()


def test_config_reads_flag_then_env_then_default():
    settings = (config.Setting("HEARTBEAT_INTERVAL_SECONDS", config.duration, "30", "h"),
                config.Setting("PORT", config.port, "8080", "p"))
    assert config.load(settings, environ={}).heartbeat_interval_seconds == 30.0
    assert config.load(settings, environ={"HEARTBEAT_INTERVAL_SECONDS": "0.25"}).heartbeat_interval_seconds == 0.25
    with pytest.raises(config.ConfigError) as info:
        config.load(settings, environ={"PORT": "http"})
    assert "PORT" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(config.ConfigError):
        config.load(settings, environ={"HEARTBEAT_INTERVAL_SECONDS": "-1"})


# --- issue 7: the pod's edges, as pure rules -----------------------------------------------------
def test_last_seq_is_bounded_in_messages_and_the_query_string():
    top = protocol.MAX_SEQ
    resume = protocol.parse_client_message(b'{"event":"resume","data":{"last_seq":%d}}' % top)
    assert (resume.kind, resume.last_seq) == ("resume", top)
    for value in (top + 1, 2**63, 18446744073709551615, 1.5, "3"):
        payload = orjson.dumps({"event": "resume", "data": {"last_seq": value}})
        message = protocol.parse_client_message(payload)
        assert (message.kind, message.error_code) == ("invalid", "INVALID_MESSAGE"), value
    assert protocol.parse_last_seq(None) is None
    assert protocol.parse_last_seq("12").last_seq == 12
    for raw in ("18446744073709551615", str(top + 1), "-1", "x", "", "1e3", "\u0663"):
        assert protocol.parse_last_seq(raw).error_code == "INVALID_MESSAGE", raw


def test_text_that_is_not_utf8_is_its_own_verdict():
    assert protocol.parse_client_message(b'{"event":"\xff"}') is protocol.NOT_UTF8
    assert protocol.parse_client_message(b"\xed\xa0\x80") is protocol.NOT_UTF8  # a surrogate
    assert protocol.parse_client_message("caf\u00e9".encode()).error_code == "INVALID_JSON"


@pytest.mark.parametrize("opcode,fin,rsv,expected", [
    (protocol.OP_TEXT, True, False, None),
    (protocol.OP_TEXT, True, True, protocol.PROTOCOL_ERROR),
    (protocol.OP_CONTINUATION, True, False, protocol.PROTOCOL_ERROR),
    (protocol.OP_BINARY, True, False, protocol.UNSUPPORTED_DATA),
    (protocol.OP_TEXT, False, False, protocol.MESSAGE_TOO_BIG),
])
def test_frame_violations(opcode, fin, rsv, expected):
    verdict = protocol.frame_violation(opcode, fin, rsv)
    assert (verdict[0] if verdict else None) == expected


@pytest.mark.parametrize("payload,reply,reason", [
    (b"", 1000, "client_close"),
    (b"\x03\xe8bye", 1000, "client_close"),
    ((4999).to_bytes(2, "big"), 4999, "client_close"),
    ((1012).to_bytes(2, "big"), 1012, "client_close"),
    *[(code.to_bytes(2, "big"), 1002, "protocol_error")
      for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)],
])
def test_close_replies(payload, reply, reason):
    code, close = protocol.close_reply(payload)
    assert (code, close.reason) == (reply, reason)


def test_new_close_reasons_are_named_once():
    assert (protocol.PROTOCOL_ERROR.code, protocol.INVALID_PAYLOAD.code, protocol.TOKEN_EXPIRED.code) \
        == (1002, 1007, 1008)
    assert protocol.TOKEN_EXPIRED.reason == "token_expired"
    assert len({c.reason for c in protocol.CLOSE_REASONS}) == len(protocol.CLOSE_REASONS)
    assert protocol.close_for_code(1009) is protocol.MESSAGE_TOO_BIG
    assert protocol.close_for_code(1011).reason == "internal_error"


KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("upgrade,connection,version,key,status", [
    ("websocket", "Upgrade", "13", KEY, None),
    ("WebSocket", "keep-alive, Upgrade", "13", KEY, None),  # Firefox
    ("websocket", "upgrade,keep-alive", "13", KEY, None),
    (None, "Upgrade", "13", KEY, 426),                      # a plain GET
    ("websocket", "keep-alive", "13", KEY, 400),
    ("websocket", "Upgrade", "8", KEY, 426),
    ("websocket", "Upgrade", None, KEY, 426),
    ("websocket", "Upgrade", "13", "c2hvcnQ=", 400),
    ("websocket", "Upgrade", "13", "not base64!", 400),
    ("websocket", "Upgrade", "13", "\udcff", 400),
])
def test_handshake_rules(upgrade, connection, version, key, status):
    refusal = protocol.check_handshake(upgrade, connection, version, key)
    assert (refusal.status if refusal else None) == status
    if version == "8":
        assert ("Sec-WebSocket-Version", "13") in refusal.headers


def test_request_ids_are_kept_only_when_clean():
    from ordertrack.http_edge.request_id import clean_request_id

    for good in ("req_ws_track_001", "a.b:c-d_e", "r" * 128):
        assert clean_request_id(good) == good
    for bad in (None, "", "\udcff", "caf\u00e9", "a b", "x\ty", "r" * 129, 'a"b', "a/b",
                "{x}", "a\n"):
        assert clean_request_id(bad) is None, bad


def test_credentials_that_are_not_ascii_are_a_401():
    for headers in ({"authorization": "Bearer \udcff\udcfe"}, {"authorization": "Bearer \u00ff"},
                    {"sec-websocket-protocol": "bearer.\udcff"}):
        with pytest.raises(auth.AuthError) as info:
            auth.credentials_from_headers(headers)
        assert info.value.status == 401


def test_protocol_error_log_lines_are_rate_limited():
    from ordertrack.push.wslog import RateLimit

    limit = RateLimit(limit=3, window=10.0)
    assert [limit.allow(0.0 + i * 0.1) for i in range(5)] == [True, True, True, False, False]
    assert limit.suppressed == 2
    assert limit.allow(10.5) is True
