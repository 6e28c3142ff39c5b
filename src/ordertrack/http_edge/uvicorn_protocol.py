"""The HTTP/1.1 connections of `ordertrack api` and `ordertrack ingest`: uvicorn's httptools
protocol plus the limits it lacks (uvicorn bounds neither a request's head nor its body, in
size or in time: a 10 MB header is buffered and answered, a body trickled a byte a second is
waited for forever, a chunked upload of any size is handed to the app).

`EdgeHttpProtocol` adds, per connection (`HttpLimits`, from the process's settings):

- a head over `max_head_bytes`: 431 `REQUEST_HEADER_TOO_LARGE`, as soon as that many bytes came;
- a head not complete within `head_timeout` of the connection opening (or, kept alive, of the
  request's first byte): 408 `REQUEST_TIMEOUT`;
- a declared `Content-Length` over `max_body_bytes`: 413 `REQUEST_BODY_TOO_LARGE` at once, the
  app never runs; a chunked body is counted as it arrives and refused the same way once past
  the limit (the app's pending read then sees a disconnect);
- a body not complete within `body_timeout` of its head: 408 `REQUEST_TIMEOUT`;
- a head the parser refuses: 400 `BAD_REQUEST`, or 401 when the broken line is `Authorization`;
- with a `precheck` (ingest: the carriers whose credential is a header), a request with a body
  is judged on its head first (a refusal is sent before a byte of the body is read), and the
  app runs only once the body is complete: a client trickling its body holds a socket and
  this protocol's buffer, not an app task (measured: bench/bench_http_limits.py);

each as the JSON error with a clean `X-Request-ID`, then the connection is closed. And a body
still arriving once the request is answered (a 401 answered from the headers alone) is not
read: the connection is closed. The rules are pure (`limits`, `refusals`, `request_id`,
`ordertrack.protocol`); this class only wires them to uvicorn's callbacks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ordertrack.http_edge.limits import HttpLimits, declared_body
from ordertrack.http_edge.refusals import Refusal, header_bytes, refusal, refusal_bytes
from ordertrack.http_edge.request_id import request_id
from ordertrack.protocol import head_fields, parse_error_refusal

log = logging.getLogger("ordertrack.http")

#: `precheck(path, headers) -> Refusal | None`: a request with a body judged on its head alone
#: (`headers`: lower-case names, latin-1 values)
Precheck = Callable[[str, dict[str, str]], "Refusal | None"]


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""

    def __init__(self, answer: Refusal):
        super().__init__(answer.code)
        self.answer = answer


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads and bodies. Use `protocol_factory`."""

    def __init__(self, *args: Any, limits: HttpLimits, precheck: Precheck | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.precheck = precheck
        self._waiting: Any = None  # (cycle, app) whose start waits for the complete body
        self._head_pending = True  # the next bytes belong to a request head
        self._head_bytes = 0  # bytes received so far of that head (or a bit more)
        self._body_bytes = 0  # bytes received so far of the current request's body
        self._timer: Any = None  # the head's or the body's deadline

    # --- deadlines --------------------------------------------------------------------------

    def _arm(self, seconds: float, late: Refusal) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(seconds, self._timed_out, late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, late: Refusal) -> None:
        self._timer = None
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self._refuse(late)
        elif not self.transport.is_closing():  # pragma: no cover - answered, body still late
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout, self.limits.head_late())

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- parsing ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._head_pending:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # neither process serves a WebSocket (uvicorn runs with ws="none"): an upgrade
            # request is answered as plain HTTP (a 404) and the connection closed, without
            # uvicorn's "install websockets" warning
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__.answer)
            else:
                reason = str(exc.args[0]) if exc.args else "unparsable"
                if isinstance(exc, httptools.HttpParserCallbackError):
                    reason = f"{type(exc.__context__).__name__}: {exc.__context__}"
                fields = head_fields(data)
                status, code, message = parse_error_refusal(fields, reason)
                self._refuse(refusal(code, message), fields)
        else:
            if self._head_pending and self._head_bytes > self.limits.max_head_bytes:
                self._refuse(self.limits.head_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_bytes = 0
        self._arm(self.limits.head_timeout, self.limits.head_late())

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_pending = False
        # only when the chunks of this head were big is it measured exactly
        if (self._head_bytes > self.limits.max_head_bytes
                and self._measured_head() > self.limits.max_head_bytes):
            raise _Refused(self.limits.head_too_large())
        body = declared_body(self.headers)
        if body is not None:
            if body > self.limits.max_body_bytes:
                raise _Refused(self.limits.body_too_large())  # before the app runs
            if self.precheck is not None:
                path = self.url.split(b"?", 1)[0].decode("latin-1")
                fields = {name.decode("latin-1"): value.decode("latin-1")
                          for name, value in self.headers}
                answer = self.precheck(path, fields)
                if answer is not None:
                    raise _Refused(answer)  # before a byte of the body is read
                self._waiting = True  # the app starts once the body is complete
            self._arm(self.limits.body_timeout, self.limits.body_late())
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._waiting is True:
            self._waiting = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Refused(self.limits.body_too_large())
        if self._waiting is not None and self.cycle is not None:
            self.cycle.body += body  # no app reads yet: buffered (bounded just above)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._head_pending = True
        self._head_bytes = 0
        waiting, self._waiting = self._waiting, None
        if isinstance(waiting, tuple):
            super()._start_asgi_task(*waiting)

    def on_response_complete(self) -> None:
        # a request whose body is still arriving once it is answered (a 401 from the headers,
        # a route that reads no body) is not waited for: the connection is closed
        if self.cycle is not None and self.cycle.more_body:
            self._disarm()
            self.transport.close()
            return
        super().on_response_complete()

    def _measured_head(self) -> int:
        # request line (method, target, version) + "name: value\r\n" per header + blank line
        return len(self.url) + 20 + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

    # --- refusals ---------------------------------------------------------------------------

    def _refuse(self, answer: Refusal,
                headers: Iterable[tuple[bytes, bytes]] | None = None) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the app, if it runs, sees a disconnect on its next read; what it sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        extra = [*self.server_state.default_headers, *header_bytes(answer.headers)]
        rid = request_id((self.headers or ()) if headers is None else headers)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("refused a request from %s: %d %s (%s); request %s", client, answer.status,
                    answer.code, answer.message, rid, extra={"fields": {
                        "client": client, "status": answer.status, "code": answer.code,
                        "request_id": rid}})
        self.transport.write(refusal_bytes(answer.status, answer.code, answer.message, rid,
                                           extra))
        self.transport.close()


def protocol_factory(limits: HttpLimits, precheck: Precheck | None = None) -> Any:
    """The `http=` value for `uvicorn.Config`: `EdgeHttpProtocol` bound to these limits (and
    the app's `precheck`, if any)."""
    return functools.partial(EdgeHttpProtocol, limits=limits, precheck=precheck)
