"""Schemathesis against the running API's own /openapi.json: whatever a client sends, the API
answers without a 5xx, and its answers match the document (status codes, bodies, content type).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ordertrack.models import Order, TrackingEvent
from ordertrack.store import open_store
from tests.support import ProcessGroup, free_port, wait_http_ok

FUZZ_ORDER = "ord_fuzz_1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def running_api(redis_server, keys, tmp_path_factory):
    import asyncio

    db = tmp_path_factory.mktemp("fuzz") / "tracking.db"

    async def seed() -> None:
        store = await open_store(f"sqlite:///{db}")
        try:
            await store.add_order(Order(FUZZ_ORDER, "user_1", "ups", "1Z999AA10123456784"))
            await store.append_events(FUZZ_ORDER, [
                TrackingEvent("shipped", "Louisville KY", "2025-10-01T10:00:00Z"),
                TrackingEvent("in_transit", None, "2025-10-02T10:00:00Z", "2025-10-05T12:00:00Z"),
            ])
        finally:
            await store.close()

    asyncio.run(seed())
    port = free_port()
    group = ProcessGroup()
    group.start("api", env={
        "API_HOST": "127.0.0.1", "API_PORT": str(port), "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": redis_server.url, "JWT_PUBLIC_KEY": str(keys.public_path),
        "LOG_LEVEL": "warning",
    }, log=db.with_name("api.log"))
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(base + "/healthz")
    yield base
    group.stop_all()


def operations(base: str):
    """Every operation of the API's document, loaded from the running app."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert found, "the OpenAPI document lists no operation"
    return found


def fuzz(base: str, mode: GenerationMode, headers_for=None) -> int:
    """Run generated requests of `mode` against every operation; how many were sent."""
    sent = 0
    for operation in operations(base):

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            headers = headers_for(case) if headers_for else None
            case.call_and_validate(base_url=base, checks=CHECKS, headers=headers, timeout=10)
            nonlocal sent
            sent += 1

        run()
    return sent


def test_any_valid_request_is_answered_as_documented(running_api):
    assert fuzz(running_api, GenerationMode.POSITIVE) >= 20


def test_any_invalid_request_is_answered_without_a_server_error(running_api):
    assert fuzz(running_api, GenerationMode.NEGATIVE) >= 20


def test_requests_with_a_valid_token_are_answered_as_documented(running_api, keys):
    def with_token(case) -> dict[str, str]:
        token = keys.token("user_1", [FUZZ_ORDER, str(case.path_parameters.get("order_id"))])
        return {"Authorization": f"Bearer {token}"}

    assert fuzz(running_api, GenerationMode.POSITIVE, with_token) >= 20
