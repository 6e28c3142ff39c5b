# cython: language_level=3
"""Cython pub/sub reader: the same behaviour as `ordertrack.push.pubsub_reader.PurePubSubReader`
(that module's docstring has the rules); tests/test_pubsub_reader.py compares the two."""

import asyncio
import logging

import hiredis

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp

from ordertrack import redis_layout
from ordertrack import malformed as why
from ordertrack.push.pubsub_sizes import FEED_BYTES as _FEED_BYTES
from ordertrack.push.pubsub_sizes import HANDLER_FAILED, LOGGER, READ_BUFFER_BYTES

log = logging.getLogger(LOGGER)

cdef bytes PREFIX = redis_layout.CHANNEL_PREFIX.encode()
cdef Py_ssize_t PREFIX_LEN = len(PREFIX)
cdef const char* PREFIX_C = PREFIX
cdef bytes SHARD_PREFIX = redis_layout.SHARD_CHANNEL_PREFIX_BYTES
cdef Py_ssize_t SHARD_PREFIX_LEN = len(SHARD_PREFIX)
cdef const char* SHARD_PREFIX_C = SHARD_PREFIX
cdef Py_ssize_t MAX_PAYLOAD_BYTES = why.MAX_PAYLOAD_BYTES
cdef Py_ssize_t FEED_BYTES = _FEED_BYTES
cdef object ProtocolError = hiredis.ProtocolError
cdef object ReplyError = hiredis.ReplyError
cdef str NOT_RESP = why.NOT_RESP
cdef str UNEXPECTED_REPLY = why.UNEXPECTED_REPLY
cdef str EMPTY_ORDER_ID = why.EMPTY_ORDER_ID
cdef str BAD_ORDER_ID = why.BAD_ORDER_ID
cdef str PAYLOAD_TOO_LARGE = why.PAYLOAD_TOO_LARGE


def _ignore(*_args):
    return None


cdef inline bint _is(object value, const char* literal, Py_ssize_t n):
    """`value == literal` for a bytes value, without building a bytes object."""
    return (type(value) is bytes and PyBytes_GET_SIZE(value) == n
            and memcmp(PyBytes_AS_STRING(value), literal, n) == 0)


cdef class ReaderCore:
    def __init__(self, dict watched, on_update, on_control=None, on_live=None,
                 on_malformed=None, Py_ssize_t subscriptions=1, bytes hello=b"", closed=None,
                 Py_ssize_t buffer_size=READ_BUFFER_BYTES):
        self.watched = watched
        self.on_update = on_update
        self.on_control = on_control or _ignore
        self.on_live = on_live or _ignore
        self.on_malformed = on_malformed or _ignore
        self.on_shard = _ignore
        self.subscriptions = subscriptions
        self.hello = hello
        self.closed = closed
        self.transport = None
        self.error = None
        self._reader = hiredis.Reader()
        self._gets = self._reader.gets
        self._feed = self._reader.feed
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)

    # --- asyncio.BufferedProtocol ----------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        if self.hello:
            transport.write(self.hello)

    def get_buffer(self, Py_ssize_t sizehint):
        return self._view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Py_ssize_t offset = 0
        if self._reader is None:
            return
        gets = self._gets
        while offset < nbytes:
            self._feed(self._buf, offset, min(FEED_BYTES, nbytes - offset))
            offset += FEED_BYTES
            while True:
                try:
                    reply = gets()
                except ProtocolError as exc:
                    self._fail(exc, NOT_RESP)
                    return
                if reply is False:
                    break
                self.replies += 1
                if type(reply) is list:
                    self._on_list(<list>reply)
                    if self._reader is None:
                        return
                elif isinstance(reply, ReplyError):
                    self._fail(reply, None)
                    return

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.live = False
        self._reader = None
        self._gets = None
        self._feed = None
        if self.error is None:
            self.error = exc
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(self.error)

    # --- replies -----------------------------------------------------------------------------------
    cdef int _on_list(self, list reply) except -1:
        cdef Py_ssize_t n = len(reply)
        cdef Py_ssize_t clen, head, tail
        cdef const char* cp
        cdef const char* prefix
        cdef PyObject* watch
        if n == 0:
            return self._malformed(None, UNEXPECTED_REPLY)
        kind = reply[0]
        if (n == 4 and _is(kind, b"pmessage", 8)) or (n == 3 and _is(kind, b"smessage", 8)):
            self.received += 1
            channel = reply[n - 2]
            payload = reply[n - 1]
            if type(channel) is not bytes or type(payload) is not bytes:
                return self._malformed(None, UNEXPECTED_REPLY)
            # pattern: order:tracking:ORDER_ID; sharded: order:tracking:shard:{ORDER_ID}
            if n == 4:
                prefix, head, tail = PREFIX_C, PREFIX_LEN, 0
            else:
                prefix, head, tail = SHARD_PREFIX_C, SHARD_PREFIX_LEN, 1
            clen = PyBytes_GET_SIZE(channel)
            cp = PyBytes_AS_STRING(channel)
            if (clen < head or memcmp(cp, prefix, head) != 0
                    or (tail and (clen == head or cp[clen - 1] != 125))):  # 125: '}'
                return self._malformed(None, UNEXPECTED_REPLY)
            if clen <= head + tail:
                return self._malformed(None, EMPTY_ORDER_ID)
            try:
                order_id = PyUnicode_DecodeUTF8(cp + head, clen - head - tail, NULL)
            except UnicodeDecodeError:
                return self._malformed(None, BAD_ORDER_ID)
            if PyBytes_GET_SIZE(payload) > MAX_PAYLOAD_BYTES:
                return self._malformed(order_id, PAYLOAD_TOO_LARGE)
            watch = PyDict_GetItem(self.watched, order_id)
            if watch is NULL:
                self.discarded += 1
                return 0
            try:
                self.on_update(order_id, <object>watch, payload)
            except Exception:
                log.exception(HANDLER_FAILED, order_id)
        elif n == 3 and _is(kind, b"message", 7):
            payload = reply[2]
            if type(payload) is bytes:
                self.on_control(payload)
            else:
                return self._malformed(None, UNEXPECTED_REPLY)
        elif n == 3 and (_is(kind, b"ssubscribe", 10) or _is(kind, b"sunsubscribe", 12)):
            self.on_shard(kind, reply[1])
        elif n == 3 and (_is(kind, b"psubscribe", 10) or _is(kind, b"subscribe", 9)):
            self.confirmed += 1
            if self.confirmed == self.subscriptions and not self.live:
                self.live = True
                self.on_live()
        elif not (n == 2 and _is(kind, b"pong", 4)):
            return self._malformed(None, UNEXPECTED_REPLY)
        return 0

    cdef int _malformed(self, object order_id, str reason) except -1:
        self.malformed += 1
        self.on_malformed(order_id, reason)
        return 0

    cdef int _fail(self, object exc, object reason) except -1:
        self._reader = None
        self._gets = None
        self._feed = None
        self.error = exc
        if reason is not None:
            self._malformed(None, reason)
        if self.transport is not None:
            self.transport.abort()
        return 0


class PubSubReader(ReaderCore, asyncio.BufferedProtocol):
    """The Cython reader as an `asyncio.BufferedProtocol`."""
