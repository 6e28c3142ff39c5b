"""JWT settings as an operator meets them: one verifier for the pod and the API, key rotation
(two RSA public keys in JWT_PUBLIC_KEY at once), the development-key fallback of `serve` and
`api`, and the API's and sandbox's logs as one JSON object per line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from ordertrack import auth, config
from ordertrack.api.main import SETTINGS as API_SETTINGS
from ordertrack.push.settings import SETTINGS as POD_SETTINGS
from tests.support import (
    ProcessGroup,
    free_port,
    generate_keys,
    wait_for,
    wait_http_ok,
    wait_http_ok_async,
)
from tests.support.api import add_order, get_tracking, running_api
from tests.support.pods import PodProcess, connect, recv_event, start_pod_async


@pytest.fixture(scope="module")
def rotation(tmp_path_factory):
    """Two RSA key pairs, and JWT_PUBLIC_KEY holding both public keys (old first)."""
    root = tmp_path_factory.mktemp("rotation")
    old, new = generate_keys(root / "old"), generate_keys(root / "new")
    bundle = root / "jwt-public.pem"
    bundle.write_bytes(old.public_pem + new.public_pem)
    return old, new, bundle


def jwt_settings(**env: str):
    return config.load(config.JWT, environ=env)


# --- the verifier built from settings (pure) -----------------------------------------------------


def test_pod_and_api_read_the_same_jwt_settings():
    for name in ("JWT_PUBLIC_KEY", "JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "REDIS_URL",
                 "LOG_LEVEL"):
        (pod,) = [s for s in POD_SETTINGS if s.env == name]
        (api,) = [s for s in API_SETTINGS if s.env == name]
        assert pod is api, name
    with pytest.raises(config.ConfigError, match="invalid JWT_JWKS_URL='keys.example'"):
        jwt_settings(JWT_JWKS_URL="keys.example")


def test_either_rotated_key_verifies_and_the_real_error_is_reported(rotation):
    old, new, bundle = rotation
    verifier = auth.verifier_from_settings(jwt_settings(JWT_PUBLIC_KEY=str(bundle)))
    assert verifier.verify(old.token("u1", "ord_1")).user_id == "u1"
    assert verifier.verify(new.token("u2", "ord_1")).user_id == "u2"
    # the new key's expired token: the old key's signature mismatch is skipped, expiry is said
    with pytest.raises(auth.AuthError, match="token expired"):
        verifier.verify(new.token("u2", "ord_1", ttl=-60))
    stranger = generate_keys(bundle.parent / "stranger")
    with pytest.raises(auth.BadSignature, match="bad token signature"):
        verifier.verify(stranger.token("u3", "ord_1"))


def test_no_key_or_a_bad_key_is_one_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match="JWT_PUBLIC_KEY .* or JWT_JWKS_URL is required"):
        auth.verifier_from_settings(jwt_settings())
    with pytest.raises(config.ConfigError, match="invalid JWT_PUBLIC_KEY: expected PEM text"):
        auth.verifier_from_settings(jwt_settings(JWT_PUBLIC_KEY=str(tmp_path / "missing.pem")))


# --- key rotation at the pod and at the API ------------------------------------------------------


async def test_the_pod_accepts_tokens_of_both_rotated_keys(procs, tmp_path, redis_url, rotation):
    old, new, bundle = rotation
    pod = await start_pod_async(procs, tmp_path, redis_url, old, JWT_PUBLIC_KEY=str(bundle))
    for key in (old, new):
        ws = await connect(pod, key.token("user_1", "ord_rot"), "ord_rot")
        try:
            ack = await recv_event(ws, "connection_ack")
            assert ack["data"]["order_id"] == "ord_rot"
        finally:
            await ws.close()
    stranger = generate_keys(tmp_path / "stranger")
    with pytest.raises(Exception, match="401"):
        await connect(pod, stranger.token("user_1", "ord_rot"), "ord_rot")


async def test_the_api_accepts_tokens_of_both_rotated_keys(redis_server, keys, tmp_path, rotation):
    old, new, bundle = rotation
    with running_api(redis_server, keys, tmp_path, JWT_PUBLIC_KEY=str(bundle)) as api:
        await add_order(api, "ord_rot_api")
        for key in (old, new):
            answer = get_tracking(api, "ord_rot_api", key.token("user_1", "ord_rot_api"))
            assert answer.status_code == 200, answer.text
            assert answer.json()["order_id"] == "ord_rot_api"
        refused = get_tracking(api, "ord_rot_api", keys.token("user_1", "ord_rot_api"))
        assert refused.status_code == 401
        assert refused.json()["message"] == "bad token signature"


# --- the development key: serve and api with no key set -------------------------------------------


def bare_env(**extra: str) -> dict[str, str]:
    drop = {"JWT_PUBLIC_KEY", "JWT_JWKS_URL", "DATABASE_URL", "REDIS_URL"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_without_any_key_serve_and_api_refuse_to_start(tmp_path):
    for command in ("serve", "api"):
        result = subprocess.run([sys.executable, "-m", "ordertrack", command], cwd=tmp_path,
                                env=bare_env(PORT=str(free_port()), API_PORT=str(free_port())),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"ordertrack {command}: JWT_PUBLIC_KEY (PEM text or the path of a PEM file) or "
            "JWT_JWKS_URL is required to verify tokens"]


@pytest.fixture
def dev_token(tmp_path) -> str:
    """`ordertrack token` run in tmp_path: creates .dev/keys/ there, as `make run` does."""
    minted = subprocess.run([sys.executable, "-m", "ordertrack", "token", "--user", "dev_user",
                             "--order", "ord_dev"], cwd=tmp_path, env=bare_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    return minted.stdout.strip()


async def test_with_no_key_set_serve_verifies_with_the_development_key(tmp_path, redis_url,
                                                                        dev_token):
    group = ProcessGroup()
    port = free_port()
    log = tmp_path / "pod.log"
    try:
        proc = group.start("serve", env=bare_env(REDIS_URL=redis_url, PORT=str(port),
                                                 HOST="127.0.0.1", METRICS_PORT="0"),
                           log=log, cwd=tmp_path)
        await wait_http_ok_async(f"http://127.0.0.1:{port}/readyz")
        key = (tmp_path / ".dev" / "keys" / "jwt-public.pem").resolve()
        assert (f"ordertrack serve: JWT_PUBLIC_KEY unset: using the development key {key}"
                in log.read_text())
        ws = await connect(PodProcess(proc, port, log), dev_token, "ord_dev")
        try:
            assert (await recv_event(ws, "connection_ack"))["data"]["order_id"] == "ord_dev"
        finally:
            await ws.close()
    finally:
        group.stop_all()


# --- JSON logs ------------------------------------------------------------------------------------


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line one JSON object


def test_the_api_logs_json_including_its_refusals(redis_server, keys, tmp_path):
    with running_api(redis_server, keys, tmp_path) as api:
        huge = httpx.get(f"{api.base}/healthz", headers={"X-Pad": "x" * 20_000}, timeout=5)
        assert huge.status_code == 431
        wait_for(lambda: "refused a request" in api.log.read_text(), 5, what="refusal logged")
    entries = json_lines(api.log.read_text())
    (refusal,) = [e for e in entries if e["msg"].startswith("refused a request")]
    assert (refusal["level"], refusal["status"], refusal["code"]) == (
        "warning", 431, "REQUEST_HEADER_TOO_LARGE")
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's lines too


def test_the_sandbox_logs_json(tmp_path):
    group = ProcessGroup()
    port = free_port()
    log = tmp_path / "sandbox.log"
    try:
        group.start("sandbox", "--port", str(port), log=log)
        wait_http_ok(f"http://127.0.0.1:{port}/_admin/stats")
    finally:
        for proc in group.procs:
            group.stop(proc)
    entries = json_lines(log.read_text())
    assert any(e["msg"].startswith("carrier sandbox on http://127.0.0.1:") for e in entries)
