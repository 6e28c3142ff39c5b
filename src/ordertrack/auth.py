"""JWT credentials for the WebSocket upgrade and the REST fallback.

Pure decisions, no I/O on the request path: `credentials_from_headers` finds the token,
`Verifier.verify` checks signature and claims against keys held in memory, `authorize` checks
that the token names the order. JWKS keys (when `JWT_JWKS_URL` is set) are fetched and
refreshed in the background by `JwksRefresher`, so verification never waits on the network.
`verifier_from_settings` builds the Verifier from the `config.JWT` group, for every process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ordertrack import jws
from ordertrack.config import ConfigError

log = logging.getLogger("ordertrack.auth")

ALGORITHMS = jws.ALGORITHMS
BEARER_SUBPROTOCOL_PREFIX = "bearer."
FORBIDDEN_MESSAGE = "You can only track orders you own"


class AuthError(Exception):
    """A refusal: `status` is the HTTP status, `code` the JSON `error` field."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BadSignature(AuthError):
    """The signature matches none of the keys that could have signed the token."""

    def __init__(self) -> None:
        super().__init__(401, "UNAUTHORIZED", "bad token signature")


def unauthorized(message: str) -> AuthError:
    return AuthError(401, "UNAUTHORIZED", message)


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    order_ids: frozenset[str]
    expires_at: float


def load_public_key(value: str) -> str:
    """`JWT_PUBLIC_KEY` is PEM text (as a Kubernetes secret gives it) or a path to a PEM file."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        return value
    if os.path.isfile(value):
        with open(value, encoding="ascii") as handle:
            return handle.read()
    raise ValueError("expected PEM text or the path of a PEM file")


def credentials_from_headers(headers: Mapping[str, str], query: str = "") -> str:
    """The JWT offered by a request: `Authorization: Bearer` or a `bearer.<jwt>` subprotocol.

    A token in the query string is refused outright: URLs end up in proxy logs.
    """
    if query:
        for part in query.split("&"):
            name = part.split("=", 1)[0].lower()
            if name in ("token", "access_token", "jwt", "auth"):
                raise unauthorized("tokens in the query string are refused; use the Authorization header")
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'")
        return _ascii_token(token.strip())
    for protocol in offered_subprotocols(headers):
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            token = protocol[len(BEARER_SUBPROTOCOL_PREFIX):]
            if token:
                return _ascii_token(token)
    raise unauthorized("missing credentials: send 'Authorization: Bearer <token>'")


def _ascii_token(token: str) -> str:
    """A JWT is ASCII. Servers hand other header bytes over as latin-1 or surrogate escapes,
    which the JWT library cannot encode: refuse them here, as the 401 they are."""
    if not token.isascii():
        raise unauthorized("malformed token: credentials must be ASCII")
    return token


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("sec-websocket-protocol") or ""
    return [part.strip() for part in raw.split(",") if part.strip()]


class Verifier:
    """Verifies RS256/ES256 tokens against a static PEM key and/or JWKS keys by `kid`."""

    def __init__(self, public_key_pem: str | None = None, issuer: str | None = None,
                 audience: str | None = None, leeway: float = 0.0):
        # several PEM blocks may be given (key rotation, or one RSA and one EC key)
        self._static_keys: dict[str, list] = {"RS256": [], "ES256": []}
        for key in _load_pems(public_key_pem or ""):
            self._static_keys["ES256" if _is_ec(key) else "RS256"].append(key)
        self._jwks: dict[str, object] = {}
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def set_jwks(self, jwks: Mapping) -> None:
        keys: dict[str, object] = {}
        for entry in jwks.get("keys", []):
            kid = entry.get("kid")
            kty = entry.get("kty")
            try:
                if kty == "RSA":
                    keys[kid] = RSAAlgorithm.from_jwk(entry)
                elif kty == "EC":
                    keys[kid] = ECAlgorithm.from_jwk(entry)
            except (ValueError, jwt.InvalidKeyError) as exc:
                log.warning("skipping JWKS key kid=%s: %s", kid, exc)
        # keep the old keys until the new set is known good: rotation-safe
        if keys:
            self._jwks = keys

    def _keys_for(self, header: dict) -> list:
        alg = header["alg"]
        kid = header.get("kid")
        if kid and kid in self._jwks:
            return [self._jwks[kid]]
        if self._static_keys[alg]:
            return self._static_keys[alg]
        if kid:
            raise unauthorized("token signed with an unknown key")
        raise unauthorized(f"no {alg} key to verify the token")

    def verify(self, token: str) -> Claims:
        """Signature and claims (see ordertrack.jws), with the keys parsed once at start-up."""
        try:
            header, signing_input, payload_segment, signature = jws.split(token)
        except (jws.InvalidToken, UnicodeEncodeError) as exc:
            raise _refusal(exc) from None
        candidates = self._keys_for(header)
        now = time.time()
        for index, key in enumerate(candidates):
            try:
                payload = jws.decode(header, signing_input, payload_segment, signature, key, now,
                                     self.leeway, self.issuer, self.audience)
                break
            except jws.InvalidToken as exc:
                # several PEM keys of one algorithm (a rotation): try the next on a bad signature
                if exc.reason not in (jws.BAD_SIGNATURE, jws.BAD_ALGORITHM) or index == len(candidates) - 1:
                    raise _refusal(exc) from None
        sub = payload.get("sub")
        if sub is None:
            raise unauthorized("token lacks the 'sub' claim")
        if not isinstance(sub, str) or not sub:
            raise unauthorized("token 'sub' must be a non-empty string")
        return Claims(user_id=sub, order_ids=_order_ids(payload), expires_at=float(payload["exp"]))


def _refusal(exc: Exception) -> AuthError:
    """The 401 for a token ordertrack.jws refused (its messages are the API's and the pod's)."""
    reason = getattr(exc, "reason", jws.MALFORMED)
    detail = getattr(exc, "detail", "")  # a jws.InvalidToken's, the only kind with a reason
    if reason == jws.MALFORMED:
        return unauthorized("malformed token")
    if reason == jws.BAD_ALGORITHM:
        return unauthorized("token algorithm must be RS256 or ES256")
    if reason == jws.BAD_SIGNATURE:
        return BadSignature()
    if reason == jws.EXPIRED:
        return unauthorized("token expired")
    if reason == jws.MISSING_CLAIM:
        return unauthorized(f"token lacks the '{detail}' claim")
    if reason in (jws.BAD_ISSUER, jws.BAD_AUDIENCE):
        return unauthorized(f"token not accepted: {detail}")
    return unauthorized(f"invalid token: {detail}")


def _order_ids(payload: Mapping) -> frozenset[str]:
    ids: set[str] = set()
    single = payload.get("order_id")
    if isinstance(single, str):
        ids.add(single)
    many = payload.get("order_ids")
    if isinstance(many, list):
        ids.update(item for item in many if isinstance(item, str))
    return frozenset(ids)


def verifier_from_settings(settings) -> Verifier:
    """The Verifier for the `config.JWT` settings: static PEM keys and/or JWKS keys (a
    `JwksRefresher` fills those in). Raises ConfigError when no key is set or the PEM is bad."""
    if not settings.jwt_public_key and not settings.jwt_jwks_url:
        raise ConfigError("JWT_PUBLIC_KEY (PEM text or the path of a PEM file) or JWT_JWKS_URL "
                          "is required to verify tokens")
    try:
        pem = load_public_key(settings.jwt_public_key) if settings.jwt_public_key else None
        return Verifier(pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    except ValueError as exc:
        raise ConfigError(f"invalid JWT_PUBLIC_KEY: {exc}") from None


def authorize(claims: Claims, order_id: str) -> None:
    """The token must name the order: 403 otherwise."""
    if order_id not in claims.order_ids:
        raise AuthError(403, "FORBIDDEN", FORBIDDEN_MESSAGE)


PEM_END = "-----END PUBLIC KEY-----"


def _load_pems(text: str) -> list:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys = []
    for block in text.split(PEM_END):
        if not block.strip():
            continue
        try:
            keys.append(load_pem_public_key((block.strip() + "\n" + PEM_END + "\n").encode("ascii")))
        except ValueError as exc:
            raise ValueError(f"not a PEM public key ({exc})") from None
    return keys


def _is_ec(key) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec

    return isinstance(key, ec.EllipticCurvePublicKey)


class JwksRefresher:
    """Fetches `JWT_JWKS_URL` in the background and hands the keys to a Verifier."""

    def __init__(self, verifier: Verifier, url: str, interval: float = 300.0):
        self.verifier = verifier
        self.url = url
        self.interval = interval
        self._task: asyncio.Task | None = None

    async def refresh(self) -> bool:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                self.verifier.set_jwks(response.json())
            return True
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS refresh from %s failed: %s (keeping the cached keys)", self.url, exc)
            return False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
