"""ordertrack.jws (the upgrade's JWT verification on `cryptography`) held to PyJWT's verdicts:
the same tokens are accepted and refused, crafted attacks and random mutations alike."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertrack import auth, jws
from tests.support import generate_keys

ISS, AUD = "https://auth.vantage.com", "tracking"


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("jws"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, signature: bytes = b"x" * 64) -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)))


def claims(**extra) -> dict:
    now = int(time.time())
    body = {"sub": "u1", "order_id": "ord_1", "exp": now + 600, "iat": now, "iss": ISS, "aud": AUD}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def pyjwt_accepts(token: str, verifier: auth.Verifier, key_pair) -> bool:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    for pem in (key_pair.public_pem, key_pair.ec_public_pem):
        try:
            jwt.decode(token, load_pem_public_key(pem), algorithms=list(jws.ALGORITHMS),
                       issuer=verifier.issuer, audience=verifier.audience,
                       options={"require": ["exp", "sub"]})
            return True
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    return False


def ours_accepts(token: str, verifier: auth.Verifier) -> bool:
    try:
        verifier.verify(token)
        return True
    except auth.AuthError:
        return False


def tokens(key_pair) -> dict[str, str]:
    rs = lambda **kw: jwt.encode(claims(**kw), key_pair.private_pem, algorithm="RS256")  # noqa: E731
    es = lambda **kw: jwt.encode(claims(**kw), key_pair.ec_private_pem, algorithm="ES256")  # noqa: E731
    good = rs()
    head, body, sig = good.split(".")
    now = int(time.time())
    return {
        "rs256": good,
        "es256": es(),
        "aud_list": rs(aud=["other", AUD]),
        "nbf_past": rs(nbf=now - 10),
        "float_exp": rs(exp=now + 600.5),
        "expired": rs(exp=now - 5),
        "nbf_future": rs(nbf=now + 300),
        "iat_future": rs(iat=now + 300),
        "no_exp": rs(exp=None),
        "no_sub": rs(sub=None),
        "wrong_iss": rs(iss="https://evil.example"),
        "no_iss": rs(iss=None),
        "wrong_aud": rs(aud="other"),
        "no_aud": rs(aud=None),
        "alg_none": forge({"alg": "none", "typ": "JWT"}, claims(), b""),
        "alg_hs256_with_the_public_key": jwt.encode(
            claims(), b"k" * 32, algorithm="HS256"),
        "es256_header_rsa_signature": ".".join(
            (b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode()), body, sig)),
        "tampered_payload": ".".join((head, b64(json.dumps(claims(sub="admin")).encode()), sig)),
        "tampered_signature": ".".join((head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB"))),
        "crit_header": forge({"alg": "RS256", "crit": ["exp"]}, claims()),
        "b64_false": forge({"alg": "RS256", "b64": False}, claims()),
        "two_segments": f"{head}.{body}",
        "four_segments": f"{good}.{sig}",
        "header_not_json": f"{b64(b'not json')}.{body}.{sig}",
        "header_array": f"{b64(b'[1]')}.{body}.{sig}",
        "bad_base64": f"{head}.{body}!.{sig}",
        "empty": "",
    }


ACCEPTED = {"rs256", "es256", "aud_list", "nbf_past", "float_exp"}


def test_crafted_tokens_get_the_same_verdict_as_pyjwt(key_pair):
    verifier = auth.Verifier(key_pair.public_pem.decode() + key_pair.ec_public_pem.decode(),
                             issuer=ISS, audience=AUD)
    verdicts = {name: (ours_accepts(t, verifier), pyjwt_accepts(t, verifier, key_pair))
                for name, t in tokens(key_pair).items()}
    assert {name for name, (ours, _) in verdicts.items() if ours} == ACCEPTED
    assert {name: v for name, v in verdicts.items() if v[0] != v[1]} == {}


def test_refusals_say_why(key_pair):
    verifier = auth.Verifier(key_pair.public_pem.decode() + key_pair.ec_public_pem.decode(),
                             issuer=ISS, audience=AUD)
    made = tokens(key_pair)
    expected = {
        "expired": "token expired", "tampered_payload": "bad token signature",
        "no_exp": "token lacks the 'exp' claim", "no_sub": "token lacks the 'sub' claim",
        "alg_none": "token algorithm must be RS256 or ES256", "two_segments": "malformed token",
        "wrong_iss": "token not accepted: Invalid issuer", "nbf_future": "invalid token: token not yet valid (nbf)",
    }
    for name, message in expected.items():
        with pytest.raises(auth.AuthError) as info:
            verifier.verify(made[name])
        assert (info.value.status, info.value.message) == (401, message), name


def test_without_configured_iss_and_aud_they_are_not_required(key_pair):
    verifier = auth.Verifier(key_pair.public_pem.decode())
    token = jwt.encode(claims(iss=None, aud=None), key_pair.private_pem, algorithm="RS256")
    assert verifier.verify(token).user_id == "u1"
    assert verifier.verify(jwt.encode(claims(), key_pair.private_pem, algorithm="RS256")).order_ids == {"ord_1"}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_mutations_get_the_same_verdict_as_pyjwt(key_pair, data):
    verifier = auth.Verifier(key_pair.public_pem.decode() + key_pair.ec_public_pem.decode(),
                             issuer=ISS, audience=AUD)
    alg = data.draw(st.sampled_from(["RS256", "ES256"]))
    key = key_pair.private_pem if alg == "RS256" else key_pair.ec_private_pem
    token = bytearray(jwt.encode(claims(), key, algorithm=alg).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(token) - 1))
        token[at] = data.draw(st.sampled_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgwxyz0123456789-_.=+/"))
    text = token.decode()
    assert ours_accepts(text, verifier) == pyjwt_accepts(text, verifier, key_pair)
