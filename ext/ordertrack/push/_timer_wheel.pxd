# The C layout of the hashed timer wheel: augments src/ordertrack/push/timer_wheel.py (Cython's
# pure-Python mode), compiled by setup.py as ordertrack.push._timer_wheel.
cimport cython


cdef double MAX_TICK

# math.ceil/floor as the module uses them interpreted: an integer (here the C long long the
# tick is); the ratio is below MAX_TICK when they are called
cdef extern from *:
    """
    #include <math.h>
    static CYTHON_INLINE long long ordertrack_ceil_ll(double x) { return (long long)ceil(x); }
    static CYTHON_INLINE long long ordertrack_floor_ll(double x) { return (long long)floor(x); }
    """
    long long ceil "ordertrack_ceil_ll"(double x) nogil
    long long floor "ordertrack_floor_ll"(double x) nogil

cpdef long long deadline_tick(double deadline, double tick) except? -1
cpdef long long now_tick(double now, double tick) except? -1


@cython.final
cdef class _Entry:
    # One scheduled key (or a ring's sentinel). The wheel's dict key -> _Entry owns every
    # entry; ring neighbours point at each other (reference cycles while they are in the
    # wheel: the GC's when a wheel is dropped with entries in it).
    cdef object key
    cdef long long tick          # absolute deadline tick
    cdef _Entry prev
    cdef _Entry next


cdef _Entry _ring()


@cython.final
cdef class TimerWheel:
    cdef readonly double tick
    cdef readonly Py_ssize_t slots
    cdef dict _index             # key -> _Entry
    cdef list _rings             # slots + 1 sentinels or None (the last: the overdue bucket)
    cdef long long _cur          # last tick walked
    cdef bint _started

    cdef Py_ssize_t _bucket_of(self, long long t) noexcept
    cdef void _unlink(self, _Entry e) noexcept
    cdef int _take(self, _Entry ring, long long upto, bint exact, list out, bint with_tick) except -1
