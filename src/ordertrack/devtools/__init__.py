"""Development tooling: `ordertrack dev`, and what the tests and bench/ start processes with.

- `processes`: free ports, waiting for a condition, the supervisor of `ordertrack dev` (restart
  with backoff, children that die with it), `ProcessGroup` for `python -m ordertrack` children.
- `redis_server`: a private redis-server on a free port.
- `keys`: the dev key pair under `.dev/keys/`, throw-away RSA/EC key pairs, minting tokens.
- `env`: the running dev stack's settings file (`var/dev/env`) the operator commands read.
- `resp`: the RESP bytes a subscriber receives, and feeding them to a pub/sub reader (the
  reader's tests and micro-benchmarks).
- `main`: `ordertrack dev` itself.

None of it is on the production path: `ordertrack serve`, `poll` and `api` never import it
(tests/test_devtools.py checks).
"""
