# The C layout of the fan-out: augments src/ordertrack/push/fanout.py (Cython's pure-Python
# mode), compiled by setup.py as ordertrack.push._fanout.
from ordertrack.push._connection cimport Connection, c_text_frame


cdef class FanOut:
    cdef public object on_malformed      # (order_id, reason)
    cdef readonly unsigned long long messages
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long frames
    cdef readonly double latency_sum     # seconds, over every observation
    cdef list _latency_counts
    cdef long long _seq                  # the last decoded message's seq

    cdef object _decode(self, bytes payload)
    cpdef Py_ssize_t publish(self, str order_id, object watch, bytes payload) except -1
