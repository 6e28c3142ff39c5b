# Declarations of the fan-out (module ordertrack.push._fanout).

cdef enum:
    MAX_BUCKETS = 16  # slots of the latency histogram: fanout.LATENCY_BUCKETS and +Inf


cdef class FanOut:
    # Decode once, encode once, deliver by the per-connection rule (see push/fanout.py).
    cdef public object on_malformed      # (order_id, reason)
    cdef readonly unsigned long long messages
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long frames
    cdef readonly double latency_sum     # seconds, over every observation
    cdef double _bounds[MAX_BUCKETS]
    cdef unsigned long long _latency_counts[MAX_BUCKETS]

    cpdef Py_ssize_t publish(self, str order_id, object watch, bytes payload) except -1
    cdef object _decode(self, bytes payload, long long* seq)
    cdef void _observe(self, double latency)
