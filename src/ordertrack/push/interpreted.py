"""What `cython` is to push/connection.py (Cython's pure-Python mode) where Cython is not
installed: only what that module uses at run time; it then runs interpreted, as the twin."""

compiled = False


def cfunc(function):
    return function


def declare(_type, value=None):
    return value


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
