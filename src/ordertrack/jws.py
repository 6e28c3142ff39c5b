"""Compact JWS (RFC 7515) and JWT claims (RFC 7519) checks for RS256/ES256, on `cryptography`.

Why not PyJWT on the upgrade path: PyJWT 2.15 parses the token twice per verification
(`get_unverified_header`, then `decode`) and checks every base64url character in a Python
generator; with keys already parsed, that was ~2.7x the cost of the signature check itself
(BENCHMARKS.md, `bench/bench_admission.py::test_jwt_verify`). These functions do the same
checks with C-level helpers. tests/test_jws.py holds them to PyJWT's verdicts.

Checks, in order: three base64url segments (canonical, optional `=` padding); a JSON object
header whose `alg` is in the allow-list, with no `crit` (no extension is understood) and no
unencoded payload (`b64: false`); the signature with a key of the algorithm's type; a JSON
object payload; `exp` required, `nbf` and `iat` when present, each a JSON number (`exp` past,
`nbf`/`iat` in the future refuse it, with `leeway`); `iss` and `aud` when configured.
Every refusal is `InvalidToken(reason)`; `reason` is one of the names below.
"""

from __future__ import annotations

import binascii
import re

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGORITHMS = ("RS256", "ES256")
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()
_ECDSA = ec.ECDSA(_SHA256)

# reasons
MALFORMED = "malformed"          # not three canonical base64url segments of JSON objects
BAD_ALGORITHM = "bad_algorithm"  # alg not allowed, or not the key's type
UNSUPPORTED = "unsupported"      # crit or b64=false: an extension we do not implement
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"  # nbf or iat in the future
BAD_CLAIM = "bad_claim"          # a time claim that is not a number
MISSING_CLAIM = "missing_claim"
BAD_ISSUER = "bad_issuer"
BAD_AUDIENCE = "bad_audience"


class InvalidToken(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: a base64url character's 6-bit value (by byte; only the alphabet is ever looked up)
_VALUE = bytes(_ALPHABET.index(byte) if byte in _ALPHABET else 0 for byte in range(256))
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
#: bits the last character of a segment leaves unused, by segment length % 4: zero when canonical
_UNUSED_BITS = {0: 0, 2: 0x0F, 3: 0x03}


def _b64(segment: bytes) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise InvalidToken(MALFORMED, "segment is not base64url")
    stripped = segment.rstrip(b"=")
    rest = len(stripped) % 4
    if rest == 1 or (stripped != segment and len(segment) % 4):
        raise InvalidToken(MALFORMED, "bad base64url padding")
    # canonical only: unused trailing bits must be zero (one token, one encoding)
    if rest and _VALUE[stripped[-1]] & _UNUSED_BITS[rest]:
        raise InvalidToken(MALFORMED, "non-canonical base64url")
    try:
        return binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-rest % 4),
                                   strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidToken(MALFORMED, "bad base64url") from None


def _json_object(data: bytes, what: str) -> dict:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidToken(MALFORMED, f"{what} is not JSON") from None
    if type(value) is not dict:
        raise InvalidToken(MALFORMED, f"{what} is not a JSON object")
    return value


#: checked headers by their segment: every token of one issuer and key has the same one
_HEADERS: dict[bytes, dict] = {}
HEADERS_MAX = 256


def split(token: str | bytes) -> tuple[dict, bytes, bytes, bytes]:
    """(header, signing input, payload segment, signature) of a compact JWS; the header is
    checked (alg allow-list, no `crit`, no `b64: false`), nothing else is. The header dict is
    shared between tokens that carry the same header: read it, never change it."""
    raw = token.encode("ascii") if isinstance(token, str) else token
    parts = raw.split(b".")
    if len(parts) != 3:
        raise InvalidToken(MALFORMED, "not three segments")
    header = _HEADERS.get(parts[0])
    if header is None:
        header = _json_object(_b64(parts[0]), "header")
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken(BAD_ALGORITHM, "token algorithm must be RS256 or ES256")
        if "crit" in header or header.get("b64", True) is not True:
            raise InvalidToken(UNSUPPORTED, "unsupported JWS extension")
        if len(_HEADERS) >= HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[parts[0]] = header
    signature = _b64(parts[2])
    return header, raw[:len(parts[0]) + 1 + len(parts[1])], parts[1], signature


#: key classes already seen to be RSA public keys (an ABC isinstance check costs ~1 us)
_RSA_TYPES: set[type] = set()


def verify_signature(alg: str, key, signing_input: bytes, signature: bytes) -> None:
    try:
        if alg == "RS256":
            if type(key) not in _RSA_TYPES:
                if not isinstance(key, rsa.RSAPublicKey):
                    raise InvalidToken(BAD_ALGORITHM, "RS256 needs an RSA key")
                _RSA_TYPES.add(type(key))
            key.verify(signature, signing_input, _PKCS1, _SHA256)
        else:
            if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
                raise InvalidToken(BAD_ALGORITHM, "ES256 needs a P-256 key")
            if len(signature) != 64:
                raise InvalidToken(BAD_SIGNATURE, "bad token signature")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, _ECDSA)
    except InvalidSignature:
        raise InvalidToken(BAD_SIGNATURE, "bad token signature") from None


def _number(payload: dict, claim: str) -> float:
    value = payload[claim]
    if type(value) not in (int, float):
        raise InvalidToken(BAD_CLAIM, f"'{claim}' must be a number")
    return value


def check_claims(payload: dict, now: float, leeway: float = 0.0, issuer: str | None = None,
                 audience: str | None = None) -> None:
    """RFC 7519 4.1's registered claims, as configured (`exp` always required)."""
    if payload.get("exp") is None:
        raise InvalidToken(MISSING_CLAIM, "exp")
    if _number(payload, "exp") <= now - leeway:
        raise InvalidToken(EXPIRED, "token expired")
    for claim in ("nbf", "iat"):
        if claim in payload and _number(payload, claim) > now + leeway:
            raise InvalidToken(NOT_YET_VALID, f"token not yet valid ({claim})")
    if issuer is not None:
        if "iss" not in payload:
            raise InvalidToken(MISSING_CLAIM, "iss")
        if payload["iss"] != issuer:
            raise InvalidToken(BAD_ISSUER, "Invalid issuer")
    if audience is not None:
        aud = payload.get("aud")
        if not aud:
            raise InvalidToken(MISSING_CLAIM, "aud")
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
            raise InvalidToken(BAD_AUDIENCE, "Invalid claim format in token")
        if audience not in auds:
            raise InvalidToken(BAD_AUDIENCE, "Audience doesn't match")


def decode(header: dict, signing_input: bytes, payload_segment: bytes, signature: bytes, key,
           now: float, leeway: float = 0.0, issuer: str | None = None,
           audience: str | None = None) -> dict:
    """The verified claims of a token `split` has taken apart, checked with `key`."""
    verify_signature(header["alg"], key, signing_input, signature)
    payload = _json_object(_b64(payload_segment), "payload")
    check_claims(payload, now, leeway, issuer, audience)
    return payload
