"""`ordertrack token`: mint a development JWT.

`ordertrack token --user U --order O` signs a token with the dev key pair under `.dev/keys/`
(created if missing, see `devtools.keys`), or with `JWT_PRIVATE_KEY`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ordertrack import config
from ordertrack.devtools.keys import DEV_KEY_DIR, PRIVATE_NAME, ensure_dev_keys, mint

SETTINGS = (
    config.Setting("JWT_PRIVATE_KEY", config.optional_text, None,
                   f"PEM private key path (default {DEV_KEY_DIR / PRIVATE_NAME}, created if missing)"),
    config.pick(config.JWT, "JWT_ISSUER"),
    config.pick(config.JWT, "JWT_AUDIENCE"),
)


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
