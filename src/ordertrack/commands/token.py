"""Development JWT keys and `ordertrack token`.

`make run` (through `ordertrack dev`) keeps an RSA key pair under `.dev/keys/` (git-ignored);
`ordertrack token --user U --order O` signs a token with it. No private key is ever committed:
production pods only get the public key (`JWT_PUBLIC_KEY`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jwt

from ordertrack import config

DEV_KEY_DIR = Path(".dev/keys")
PRIVATE_NAME = "jwt-private.pem"
PUBLIC_NAME = "jwt-public.pem"

SETTINGS = (
    config.Setting("JWT_PRIVATE_KEY", config.optional_text, None,
                   f"PEM private key path (default {DEV_KEY_DIR / PRIVATE_NAME}, created if missing)"),
    config.Setting("JWT_ISSUER", config.optional_text, None, "'iss' claim to put in the token"),
    config.Setting("JWT_AUDIENCE", config.optional_text, None, "'aud' claim to put in the token"),
)


def ensure_dev_keys(directory: Path = DEV_KEY_DIR) -> tuple[Path, Path]:
    """Create the dev RSA key pair once; returns (private, public) paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def dev_public_key_path() -> str | None:
    """The dev public key, when `JWT_PUBLIC_KEY` is unset and one exists here (`make run`,
    `ordertrack token`). Lets a developer run `ordertrack serve` with no setup; a production
    pod has no `.dev/` folder, and a warning is logged whenever this fallback is used."""
    path = DEV_KEY_DIR / PUBLIC_NAME
    return str(path.resolve()) if path.is_file() else None


def mint(private_pem: bytes | str, user_id: str, order_ids: list[str], ttl: float = 3600,
         issuer: str | None = None, audience: str | None = None) -> str:
    now = int(time.time())
    claims: dict = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if len(order_ids) == 1:
        claims["order_id"] = order_ids[0]
    else:
        claims["order_ids"] = order_ids
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, private_pem, algorithm="RS256")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the token's subject (user id)")
    parser.add_argument("--order", required=True, action="append",
                        help="an order the token may track (repeat for several)")
    parser.add_argument("--ttl", type=config.duration, default=3600.0, help="lifetime in seconds")
    config.add_flags(parser, SETTINGS)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(SETTINGS, args)
    if cfg.jwt_private_key:
        path = Path(cfg.jwt_private_key)
        if not path.is_file():
            raise config.ConfigError(f"JWT_PRIVATE_KEY: no such file {path}")
    else:
        path, _ = ensure_dev_keys()
    print(mint(path.read_bytes(), args.user, args.order, args.ttl, cfg.jwt_issuer, cfg.jwt_audience))
    return 0
