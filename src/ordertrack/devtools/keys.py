"""JWT key pairs and tokens for development: never a production key.

`ordertrack dev` and `ordertrack token` keep one RSA key pair under `.dev/keys/` (git-ignored);
the tests and the benches make throw-away pairs with `generate_keys`. No private key is ever
committed: production pods only get the public key (`JWT_PUBLIC_KEY`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

DEV_KEY_DIR = Path(".dev/keys")
PRIVATE_NAME = "jwt-private.pem"
PUBLIC_NAME = "jwt-public.pem"


def new_key_pems(kind: str = "rsa") -> tuple[bytes, bytes]:
    """A fresh key pair as (private PKCS8 PEM, public SubjectPublicKeyInfo PEM): RSA 2048
    (RS256) or EC P-256 (ES256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def ensure_dev_keys(directory: Path = DEV_KEY_DIR) -> tuple[Path, Path]:
    """Create the dev RSA key pair once; returns (private, public) paths."""
    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    directory.mkdir(parents=True, exist_ok=True)
    private, public = new_key_pems()
    private_path.write_bytes(private)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public)
    return private_path, public_path


def dev_public_key_path() -> str | None:
    """The dev public key, when `JWT_PUBLIC_KEY` is unset and one exists here (`make run`,
    `ordertrack token`). Lets a developer run `ordertrack serve` with no setup; a production
    pod has no `.dev/` folder, and a warning is logged whenever this fallback is used."""
    path = DEV_KEY_DIR / PUBLIC_NAME
    return str(path.resolve()) if path.is_file() else None


def token_claims(user_id: str, order: str | list[str] | None, ttl: float = 3600,
                 **claims: Any) -> dict[str, Any]:
    """`sub`, `iat`, `exp` and `order_id` (a string) or `order_ids` (a list); `claims` added
    last, so they may override any of them."""
    now = time.time()
    body: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": int(now + ttl)}
    if isinstance(order, list):
        body["order_ids"] = order
    elif order is not None:
        body["order_id"] = order
    body.update(claims)
    return body


def mint(private_pem: bytes | str, user_id: str, order_ids: list[str], ttl: float = 3600,
         issuer: str | None = None, audience: str | None = None) -> str:
    """An RS256 token for these orders (`order_id` for one, `order_ids` for several)."""
    order = order_ids[0] if len(order_ids) == 1 else order_ids
    extra = {name: value for name, value in (("iss", issuer), ("aud", audience)) if value}
    return jwt.encode(token_claims(user_id, order, ttl, **extra), private_pem, algorithm="RS256")


@dataclass
class Keys:
    """An RSA and an EC key pair; `public_path` holds both public keys in one PEM bundle (the
    pod and the API accept RS256 and ES256 tokens)."""

    private_pem: bytes
    public_pem: bytes
    ec_private_pem: bytes
    ec_public_pem: bytes
    public_path: Path

    def token(self, user: str = "user_1", order: str | list[str] | None = "ord_1",
              ttl: float = 3600, alg: str = "RS256", **claims: Any) -> str:
        key = self.private_pem if alg == "RS256" else self.ec_private_pem
        return jwt.encode(token_claims(user, order, ttl, **claims), key, algorithm=alg)


def generate_keys(directory: Path) -> Keys:
    """Throw-away key pairs, the public bundle written to `directory/jwt-public.pem`."""
    private, public = new_key_pems("rsa")
    ec_private, ec_public = new_key_pems("ec")
    Path(directory).mkdir(parents=True, exist_ok=True)
    public_path = Path(directory) / PUBLIC_NAME
    public_path.write_bytes(public + ec_public)
    return Keys(private, public, ec_private, ec_public, public_path)
