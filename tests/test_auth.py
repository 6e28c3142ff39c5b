"""Token rules (auth.py): where credentials come from, what a token must prove, whose orders it
opens. The processes' key settings: test_auth_settings.py; the JWS verifier against PyJWT:
test_jws.py."""

from __future__ import annotations

import time

import jwt
import pytest

from ordertrack import auth
from tests.support import generate_keys


def test_credentials_from_headers():
    assert auth.credentials_from_headers({"authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
    offered = {"sec-websocket-protocol": "vantage-tracking-v1, bearer.abc.def.ghi"}
    assert auth.credentials_from_headers(offered) == "abc.def.ghi"
    for headers, query in [({}, ""), ({"authorization": "Basic Zm9v"}, ""),
                           ({"authorization": "Bearer x"}, "token=x"), ({}, "access_token=x")]:
        with pytest.raises(auth.AuthError) as info:
            auth.credentials_from_headers(headers, query)
        assert info.value.status == 401


def test_verifier_checks_signature_expiry_issuer_audience(keys, tmp_path):
    verifier = auth.Verifier(keys.public_pem.decode() + keys.ec_public_pem.decode(),
                             issuer="https://auth.vantage.com", audience="tracking")
    good = keys.token("u1", "ord_1", iss="https://auth.vantage.com", aud="tracking")
    claims = verifier.verify(good)
    assert claims.user_id == "u1" and claims.order_ids == {"ord_1"}
    es = keys.token("u1", ["a", "b"], alg="ES256", iss="https://auth.vantage.com", aud="tracking")
    assert verifier.verify(es).order_ids == {"a", "b"}

    bad = [
        keys.token("u1", "ord_1", iss="https://evil", aud="tracking"),
        keys.token("u1", "ord_1", iss="https://auth.vantage.com", aud="other"),
        keys.token("u1", "ord_1", ttl=-5, iss="https://auth.vantage.com", aud="tracking"),
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
