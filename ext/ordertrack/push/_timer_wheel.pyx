# cython: language_level=3
"""Hashed timer wheel for the push pod's heartbeats (module ordertrack.push._timer_wheel).

Same rules and API as the pure-Python twin, ordertrack.push.timer_wheel.PureTimerWheel (see
that module's docstring): deadline tick t = smallest t with t*tick >= deadline, now tick n = largest
n with n*tick <= now, advance fires every entry with t <= n, by tick then scheduling order.

Entries live in per-slot doubly-linked lists (appended at the tail, so a slot keeps the
scheduling order) plus a dict key -> entry for O(1) cancel and re-schedule.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from libc.math cimport ceil, fabs, floor, isnan
from operator import itemgetter

cdef double MAX_TICK = 9007199254740992.0  # 2**53: ticks stay exact as doubles
_by_tick = itemgetter(0)


@cython.final
@cython.freelist(64)
cdef class _Entry:
    pass


cdef inline _Entry _e(PyObject* p):
    return <_Entry>p


@cython.final
@cython.no_gc_clear
cdef class TimerWheel:
    """A hashed timer wheel keyed by any hashable object."""

    def __cinit__(self, tick, slots=512):
        self._heads = NULL
        self._tails = NULL
        if not isinstance(tick, (int, float)) or not (tick > 0) or tick == float("inf"):
            raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
        if not isinstance(slots, int) or slots <= 0:
            raise ValueError(f"slots must be a positive integer, got {slots!r}")
        self.tick = tick
        self.slots = slots
        self._index = {}
        self._heads = <PyObject**>PyMem_Malloc((self.slots + 1) * sizeof(PyObject*))
        self._tails = <PyObject**>PyMem_Malloc((self.slots + 1) * sizeof(PyObject*))
        if self._heads == NULL or self._tails == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(self.slots + 1):
            self._heads[i] = NULL
            self._tails[i] = NULL
        self._cur = 0
        self._started = False

    def __dealloc__(self):
        PyMem_Free(self._heads)
        PyMem_Free(self._tails)

    def __len__(self):
        return len(self._index)

    def __contains__(self, key):
        return key in self._index

    cdef long long _deadline_tick(self, double deadline) except? -1:
        cdef double ratio = deadline / self.tick
        if isnan(ratio) or fabs(ratio) >= MAX_TICK:
            raise ValueError(f"time {deadline!r} is out of range for tick {self.tick!r}")
        cdef long long t = <long long>ceil(ratio)
        if <double>t * self.tick < deadline:
            t += 1
        elif <double>(t - 1) * self.tick >= deadline:
            t -= 1
        return t

    cdef long long _now_tick(self, double now) except? -1:
        cdef double ratio = now / self.tick
        if isnan(ratio) or fabs(ratio) >= MAX_TICK:
            raise ValueError(f"time {now!r} is out of range for tick {self.tick!r}")
        cdef long long n = <long long>floor(ratio)
        if <double>n * self.tick > now:
            n -= 1
        elif <double>(n + 1) * self.tick <= now:
            n += 1
        return n

    cdef Py_ssize_t _bucket_of(self, long long t):
        if t <= self._cur:
            return self.slots
        cdef Py_ssize_t b = <Py_ssize_t>(t % self.slots)
        return b + self.slots if b < 0 else b  # C's % keeps the sign of negative ticks

    cdef void _link(self, _Entry e):
        cdef Py_ssize_t b = self._bucket_of(e.tick)
        e.next = NULL
        e.prev = self._tails[b]
        if e.prev == NULL:
            self._heads[b] = <PyObject*>e
        else:
            _e(e.prev).next = <PyObject*>e
        self._tails[b] = <PyObject*>e

    cdef void _unlink(self, _Entry e):
        # Valid while _cur has not moved since e was linked: entries in the wheel have
        # tick > _cur, overdue ones tick <= _cur, and advance() moves _cur last.
        cdef Py_ssize_t b = self._bucket_of(e.tick)
        if e.prev == NULL:
            self._heads[b] = e.next
        else:
            _e(e.prev).next = e.next
        if e.next == NULL:
            self._tails[b] = e.prev
        else:
            _e(e.next).prev = e.prev
        e.prev = NULL
        e.next = NULL

    cdef int _take(self, Py_ssize_t b, long long upto, bint exact, list out,
                   bint with_tick) except -1:
        """Remove the entries of bucket b whose tick is == upto (exact) or <= upto, in list
        order, appending their keys (or (tick, key) pairs) to out."""
        cdef PyObject* p = self._heads[b]
        cdef _Entry e
        while p != NULL:
            e = _e(p)
            p = e.next
            if (e.tick == upto) if exact else (e.tick <= upto):
                self._unlink(e)
                if with_tick:
                    out.append((e.tick, e.key))
                else:
                    out.append(e.key)
                del self._index[e.key]
        return 0

    def schedule(self, key, double deadline):
        """Fire key at deadline; replaces any earlier entry for the same key."""
        cdef long long t = self._deadline_tick(deadline)
        cdef _Entry e = self._index.get(key)
        if e is None:
            e = _Entry.__new__(_Entry)
            e.key = key
            self._index[key] = e
        else:
            self._unlink(e)
        if not self._started:
            self._cur = t - 1
            self._started = True
        e.tick = t
        self._link(e)

    def cancel(self, key):
        """Forget key; True when it was scheduled."""
        cdef _Entry e = self._index.pop(key, None)
        if e is None:
            return False
        self._unlink(e)
        return True

    def advance(self, double now):
        """Remove and return every key due at now, by tick then by scheduling order."""
        cdef long long n = self._now_tick(now)
        cdef long long p
        cdef list fired = []
        cdef list swept
        cdef Py_ssize_t b
        if not self._started:
            self._cur = n
            self._started = True
        if not self._index:
            if n > self._cur:
                self._cur = n
            return fired
        if self._heads[self.slots] != NULL:
            self._take(self.slots, n, False, fired, True)
            fired.sort(key=_by_tick)
            fired = [pair[1] for pair in fired]
        if n > self._cur:
            if n - self._cur < self.slots:
                for p in range(self._cur + 1, n + 1):
                    b = self._bucket_of(p)
                    if self._heads[b] != NULL:
                        self._take(b, p, True, fired, False)
            else:
                swept = []
                for b in range(self.slots):
                    if self._heads[b] != NULL:
                        self._take(b, n, False, swept, True)
                swept.sort(key=_by_tick)
                fired.extend([pair[1] for pair in swept])
            self._cur = n
        return fired

    def next_deadline(self):
        """The time of the earliest tick with something due, or None when empty."""
        cdef PyObject* q
        cdef long long p, best
        cdef Py_ssize_t b
        cdef _Entry e
        cdef bint first
        if not self._index:
            return None
        if self._heads[self.slots] != NULL:
            q = self._heads[self.slots]
            best = _e(q).tick
            while q != NULL:
                e = _e(q)
                if e.tick < best:
                    best = e.tick
                q = e.next
            return <double>best * self.tick
        for p in range(self._cur + 1, self._cur + 1 + self.slots):
            q = self._heads[self._bucket_of(p)]
            while q != NULL:
                e = _e(q)
                if e.tick == p:
                    return <double>p * self.tick
                q = e.next
        first = True
        best = 0
        for e in self._index.values():
            if first or e.tick < best:
                best = e.tick
                first = False
        return <double>best * self.tick
