"""The edge's FastAPI/Starlette pieces, shared by `ordertrack api` and `ordertrack ingest`:
JSON answers of the contract's type, `X-Request-ID` on every answer, JSON 404/405/500.

`RequestIdMiddleware` is plain ASGI rather than BaseHTTPMiddleware: it costs almost nothing
per request.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertrack.http_edge.refusals import CODES, JSON_TYPE, error_body, refusal
from ordertrack.http_edge.request_id import request_id

log = logging.getLogger("ordertrack.http")


class JSONBody(Response):
    """orjson-rendered JSON with an explicit `charset=utf-8` (the wire contract's type)."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(code: str, message: str | None = None,
                   headers: dict[str, str] | None = None, status: int | None = None) -> JSONBody:
    """The table's refusal for `code` as an answer (its headers, e.g. WWW-Authenticate, plus
    `headers`); `status` only for `HTTP_ERROR`, whose status is the framework's."""
    entry = refusal(code, message)
    extra = {**dict(entry.headers), **(headers or {})}
    return JSONBody(error_body(entry.code, entry.message), status_code=status or entry.status,
                    headers=extra or None)


class RequestIdMiddleware:
    """Echo `X-Request-ID` (or generate one) on every answer; turn a crash into a JSON 500."""

    def __init__(self, app: ASGIApp, logger: logging.Logger = log):
        self.app = app
        self.log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            return  # the edge refused the request (too large, too slow) or the client left
        except Exception:
            self.log.exception("unhandled error on %s %s (request %s)", scope.get("method"),
                               scope.get("path"), rid)
            if started:
                raise
            response = error_response("INTERNAL_ERROR", f"Internal error; request {rid} is logged")
            await response(scope, receive, send_with_id)


_FRAMEWORK_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def install(app: FastAPI, logger: logging.Logger = log) -> None:
    """The edge on a FastAPI app: request ids, and the framework's own errors as JSON."""
    app.add_middleware(RequestIdMiddleware, logger=logger)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = _FRAMEWORK_CODES.get(exc.status_code, "HTTP_ERROR")
        message = CODES["NOT_FOUND"].message if code == "NOT_FOUND" else str(exc.detail)
        return error_response(code, message, exc.headers, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, _exc: RequestValidationError) -> Response:
        return error_response("BAD_REQUEST", "Invalid request")
