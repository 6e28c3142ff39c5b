"""What `cython` is to push/connection.py, push/fanout.py and push/timer_wheel.py (Cython's
pure-Python mode) where Cython is not installed: only what they use at run time; they then run
interpreted, as the twins."""

compiled = False


def cfunc(function):
    return function


def declare(_type, value=None):
    return value


def cclass(cls):
    return cls


no_gc = no_gc_clear = cclass


# the C types the module names (placeholders here)
int = longlong = None  # noqa: A001
