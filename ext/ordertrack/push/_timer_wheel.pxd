# Declarations of the hashed timer wheel (module ordertrack.push._timer_wheel).
from cpython.object cimport PyObject


cdef class _Entry:
    # One scheduled key. The wheel's dict key -> _Entry owns every entry; the per-slot
    # doubly-linked lists use borrowed pointers, so entries form no reference cycles.
    cdef object key
    cdef long long tick          # absolute deadline tick; its bucket is _bucket_of(tick)
    cdef PyObject* prev
    cdef PyObject* next


cdef class TimerWheel:
    cdef readonly double tick
    cdef readonly Py_ssize_t slots
    cdef dict _index             # key -> _Entry
    cdef PyObject** _heads       # slots + 1 list heads (last one: overdue bucket)
    cdef PyObject** _tails
    cdef long long _cur          # last tick walked
    cdef bint _started

    cdef long long _deadline_tick(self, double deadline) except? -1
    cdef long long _now_tick(self, double now) except? -1
    cdef Py_ssize_t _bucket_of(self, long long t)
    cdef void _link(self, _Entry e)
    cdef void _unlink(self, _Entry e)
    cdef int _take(self, Py_ssize_t b, long long upto, bint exact, list out, bint with_tick) except -1
