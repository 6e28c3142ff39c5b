# cython: language_level=3
"""Cython fan-out: the same behaviour as `ordertrack.push.fanout.PureFanOut` (that module's
docstring has the rules); tests/test_fanout.py compares the two, tests/test_message_rule.py
compares `_decode` with `redis_layout.decode_message`, the message rule it mirrors."""

import orjson

from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_New, PyDict_SetItem
from cpython.object cimport PyObject
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from ordertrack.push._connection cimport Connection, c_text_frame

from ordertrack import protocol, redis_layout
from ordertrack import malformed as why
from ordertrack.push.delivery import LATENCY_BUCKETS

cdef object loads = orjson.loads
cdef object dumps = orjson.dumps
cdef object JSONDecodeError = orjson.JSONDecodeError
cdef tuple FIELDS = protocol.CLIENT_UPDATE_FIELDS
cdef tuple STRING_FIELDS = redis_layout.STRING_FIELDS
cdef Py_ssize_t MAX_PAYLOAD_BYTES = why.MAX_PAYLOAD_BYTES
cdef long long MAX_SEQ = protocol.MAX_SEQ
cdef str PAYLOAD_TOO_LARGE = why.PAYLOAD_TOO_LARGE
cdef str NOT_JSON = why.NOT_JSON
cdef str NOT_OBJECT = why.NOT_OBJECT
cdef str BAD_SEQ = why.BAD_SEQ
cdef str MISSING_FIELD = why.MISSING_FIELD
cdef str BAD_FIELD = why.BAD_FIELD
cdef str EVENT = "tracking_update"
cdef Py_ssize_t NBOUNDS = len(LATENCY_BUCKETS)
assert NBOUNDS < MAX_BUCKETS, "LATENCY_BUCKETS has more bounds than the Cython fan-out holds"


def _ignore(*_args):
    return None


cdef inline double _now():
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class FanOut:
    def __init__(self, on_malformed=None):
        cdef Py_ssize_t i
        self.on_malformed = on_malformed or _ignore
        for i in range(NBOUNDS):
            self._bounds[i] = LATENCY_BUCKETS[i]

    def latency_counts(self):
        """Observations per bucket (not cumulative): one per LATENCY_BUCKETS bound, then +Inf."""
        return [self._latency_counts[i] for i in range(NBOUNDS + 1)]

    cdef void _observe(self, double latency):
        cdef Py_ssize_t i = 0
        while i < NBOUNDS and latency > self._bounds[i]:
            i += 1
        self._latency_counts[i] += 1
        self.latency_sum += latency

    cdef object _decode(self, bytes payload, long long* seq):
        """(frame, published_at), or the reason (a str) it is malformed: redis_layout's
        decode_message, the same checks in the same order."""
        cdef PyObject* value
        if PyBytes_GET_SIZE(payload) > MAX_PAYLOAD_BYTES:
            return PAYLOAD_TOO_LARGE
        try:
            message = loads(payload)
        except JSONDecodeError:
            return NOT_JSON
        if type(message) is not dict:
            return NOT_OBJECT
        value = PyDict_GetItem(message, "seq")
        if value is NULL or type(<object>value) is not int:
            return BAD_SEQ
        if not (1 <= <object>value <= MAX_SEQ):
            return BAD_SEQ
        seq[0] = <long long><object>value
        for field in STRING_FIELDS:
            if PyDict_GetItem(message, field) is NULL:
                return MISSING_FIELD
        data = PyDict_New()
        for field in FIELDS:
            value = PyDict_GetItem(message, field)
            PyDict_SetItem(data, field, None if value is NULL else <object>value)
        for field in STRING_FIELDS:
            if type(data[field]) is not str:
                return BAD_FIELD
        value = PyDict_GetItem(message, "published_at")
        return (dumps({"event": EVENT, "data": data}),
                None if value is NULL else <object>value)

    cpdef Py_ssize_t publish(self, str order_id, object watch, bytes payload) except -1:
        """Fan one message out to `watch.conns`; returns how many connections it was sent to."""
        cdef long long seq = 0
        cdef Py_ssize_t delivered = 0
        self.messages += 1
        decoded = self._decode(payload, &seq)
        if type(decoded) is str:
            self.malformed += 1
            self.on_malformed(order_id, decoded)
            return 0
        frame, published_at = <tuple>decoded
        if seq > watch.seq:
            watch.seq = seq
        # the delivery rule is the connection's (`Connection.deliver`): the compiled one's C
        # method, any other watcher's (a test's) as a Python call. Everyone it is sent to gets
        # the same whole WebSocket frame, built once.
        conns = tuple(watch.conns)
        ws_frame = c_text_frame(<bytes>frame) if conns else None
        for conn in conns:
            if type(conn) is Connection:
                if (<Connection>conn).deliver(<bytes>frame, seq, ws_frame):
                    delivered += 1
            elif conn.deliver(frame, seq, ws_frame):
                delivered += 1
        self.frames += delivered
        if delivered and (type(published_at) is float or type(published_at) is int):
            self._observe(_now() - published_at)
        return delivered
