"""The API's OpenAPI document: the bodies' models (documentation only: the hot path returns
pre-serialised bytes and validates nothing) and the patches FastAPI's generator needs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from ordertrack.http_edge.refusals import CODES, JSON_TYPE


class HistoryEntry(BaseModel):
    status: str
    location: str | None
    timestamp: str = Field(description="ISO 8601 UTC")
    seq: int = Field(description="the event's sequence number (strictly increasing)")


class Realtime(BaseModel):
    enabled: bool = Field(description="open the WebSocket: the realtime_order_tracking flag "
                          "for this user, region and carrier")
    url: str = Field(description="the order's WebSocket URL")


class TrackingAnswer(BaseModel):
    order_id: str
    tracking_number: str
    carrier: str
    status: str
    last_update: str | None
    estimated_delivery: str | None
    seq: int = Field(description="the newest event's seq (0 before the first event)")
    history: list[HistoryEntry] = Field(description="oldest first")
    realtime: Realtime


class ErrorBody(BaseModel):
    error: str = Field(examples=["FORBIDDEN"])
    message: str = Field(examples=[CODES["FORBIDDEN"].message])


def _error_doc(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


TRACKING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TrackingAnswer, "description": "The order's tracking state and history"},
    401: _error_doc("UNAUTHORIZED: missing, malformed, expired or badly signed token"),
    403: _error_doc("FORBIDDEN: the token does not name this order"),
    404: _error_doc("NOT_FOUND: the token names an order the store does not have"),
    503: _error_doc("UNAVAILABLE: the tracking store or Redis cannot answer right now"),
}

TRACKING_OPENAPI_EXTRA: dict[str, Any] = {
    "security": [{"bearerAuth": []}],
    "parameters": [
        {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "X-Request-ID", "in": "header", "required": False,
         "schema": {"type": "string"}, "description": "echoed; generated when absent"},
        {"name": "X-Fallback-Reason", "in": "header", "required": False,
         "schema": {"type": "string"},
         "description": "why the client polls (e.g. websocket_disconnected); counted"},
    ],
}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for `app`, with the bearer scheme, without the unused 422 entries,
    and with the media type named plainly (the charset is in the Content-Type header)."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for response in responses.values():
                content = response.get("content", {})
                if JSON_TYPE in content:
                    content["application/json"] = content.pop(JSON_TYPE)
    return schema


def install(app: FastAPI) -> None:
    """Serve `document(app)` at /openapi.json, built once on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
