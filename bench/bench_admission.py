"""Micro-benchmarks of admission: JWT verification and one admission batch against Redis.

Run: .venv/bin/python -m pytest bench/bench_admission.py --benchmark-enable
     (or `make bench`, which runs every micro-benchmark and compares with the stored baseline)

- `test_jwt_verify`: `auth.Verifier.verify` (ordertrack.jws on `cryptography`, keys parsed
  once) against the PyJWT path it replaced (`get_unverified_header` + `jwt.decode` with the
  same parsed key), RS256 and ES256.
- `test_admission_batch`: the Redis side of admitting `BATCH` connections: ONE pipeline with
  one `register.lua` call for the whole batch and one `states.lua` call reading every order's
  state hash (as push/admission.py sends it), against a private redis-server; `extra_info`
  has connections/s. `[hgetall]` is the same batch with one HGETALL per
  connection instead of `states.lua`, as admission read the states before.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import jwt
import pytest
import redis.asyncio as aioredis
import uvloop

from ordertrack import auth, redis_layout
from ordertrack.devtools.keys import generate_keys
from ordertrack.devtools.redis_server import RedisServer
from ordertrack.push import admission, user_registry

BATCH = 256
CLAIMS = {"sub": "user_1", "order_id": "ord_1", "iss": "https://auth.vantage.com", "aud": "tracking"}


@pytest.fixture(scope="module")
def key_pair():
    with tempfile.TemporaryDirectory() as directory:
        yield generate_keys(directory)


def pyjwt_verify(verifier: auth.Verifier, token: str) -> dict:
    """The verification this pod did before ordertrack.jws: PyJWT, keys already parsed."""
    header = jwt.get_unverified_header(token)
    key = verifier._static_keys[header["alg"]][0]
    return jwt.decode(token, key=key, algorithms=list(auth.ALGORITHMS), issuer=verifier.issuer,
                      audience=verifier.audience, options={"require": ["exp", "sub"]})


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
@pytest.mark.parametrize("impl", ["jws", "pyjwt"])
def test_jwt_verify(benchmark, key_pair, impl, alg):
    verifier = auth.Verifier(key_pair.public_pem.decode() + key_pair.ec_public_pem.decode(),
                             issuer=CLAIMS["iss"], audience=CLAIMS["aud"])
    private = key_pair.private_pem if alg == "RS256" else key_pair.ec_private_pem
    token = jwt.encode({**CLAIMS, "exp": int(time.time()) + 3600, "iat": int(time.time())},
                       private, algorithm=alg)
    verify = verifier.verify if impl == "jws" else (lambda t: pyjwt_verify(verifier, t))
    benchmark(verify, token)
    benchmark.extra_info["verifications_per_s"] = round(1 / benchmark.stats.stats.min)


@pytest.fixture(scope="module")
def redis_url():
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory)
        server.start()
        yield server.url
        server.stop()


@pytest.mark.parametrize("states", ["states_lua", "hgetall"])
def test_admission_batch(benchmark, redis_url, states):
    loop = uvloop.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    reg = user_registry.UserRegistry(client, "bench-pod", limit=5)
    rounds = iter(range(10**9))
    orders = [f"ord_{i}" for i in range(BATCH)]

    async def admit_batch() -> list:
        n = next(rounds)
        batch = [(f"user_{n}_{i}", f"ws_conn_{n:04x}{i:04x}") for i in range(BATCH)]
        pipe = client.pipeline(transaction=False)
        reg.queue_register(pipe, batch, int(time.time() * 1000))
        if states == "states_lua":
            groups = admission.queue_states(pipe, orders, cluster=False)
            replies = await pipe.execute(raise_on_error=False)
            decoded = [admission.decode_states(fields) for fields in
                       user_registry.script_results(replies[1:], groups, BATCH)]
        else:
            for order in orders:
                pipe.hgetall(redis_layout.state(order))
            replies = await pipe.execute(raise_on_error=False)
            decoded = [redis_layout.decode_state(state) for state in replies[1:]]
        assert len(decoded) == BATCH
        return replies

    async def setup() -> None:
        await reg.heartbeat()
        await reg.load_script()
        await client.script_load(admission.STATES_LUA)
        for order in orders:
            await client.hset(redis_layout.state(order), mapping={
                "status": "in_transit", "carrier": "dhl", "seq": "3"})

    loop.run_until_complete(setup())
    results = benchmark(lambda: loop.run_until_complete(admit_batch()))
    registered = user_registry.script_results(results[:1], [list(range(BATCH))], BATCH)
    assert len(registered) == BATCH and not any(isinstance(r, Exception) for r in registered)
    benchmark.extra_info["connections_per_s"] = round(BATCH / benchmark.stats.stats.min)
    loop.run_until_complete(client.aclose())
    loop.close()
    asyncio.set_event_loop(None)
