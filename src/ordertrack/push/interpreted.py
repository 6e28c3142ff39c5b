"""What `cython` is to the pure-Python-mode modules of push/ (connection.py, fanout.py,
pubsub_reader.py, timer_wheel.py) where Cython is not installed: only what they use at run
time; they then run interpreted, as the twins."""

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
Py_ssize_t = None  # push/pubsub_reader.py (and push/fanout.py) name it at import
double = bint = None


def inline(function):
    return function


def cast(_type, value):
    return value


def address(value):
    return value
