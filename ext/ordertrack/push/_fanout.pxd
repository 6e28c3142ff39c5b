# Declarations of the fan-out (module ordertrack.push._fanout).


cdef class FanOut:
    # Decode once, encode once, deliver by the per-connection rule (see push/fanout.py).
    cdef public object on_delivered      # (count, latency seconds) or None
    cdef public object on_malformed      # (order_id, reason)
    cdef readonly unsigned long long messages
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long frames

    cpdef Py_ssize_t publish(self, str order_id, object watch, bytes payload) except -1
    cdef object _decode(self, bytes payload, long long* seq)
