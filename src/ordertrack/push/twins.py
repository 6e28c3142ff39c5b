"""How each Cython part of the pod and its pure-Python twin are chosen, in one place.

`ext/ordertrack/push/_NAME.pyx` builds `ordertrack.push._NAME`; `push/NAME.py` holds the twin
and, at import, takes the extension when it is built (try/except ImportError, as websockets
picks its speedups), unless `ORDERTRACK_PURE_PYTHON=1` asks for every twin.
"""

from __future__ import annotations

import importlib
import os

PURE_PYTHON = "ORDERTRACK_PURE_PYTHON"


def choose(pure: type, extension: str, name: str) -> tuple[str, type, dict[str, type]]:
    """(IMPLEMENTATION: "cython" or "python", the class to use, IMPLEMENTATIONS: every one
    built, by implementation) for the class `name` of the module `extension`."""
    impls: dict[str, type] = {"python": pure}
    try:
        fast = getattr(importlib.import_module(extension), name)
    except ImportError:
        return "python", pure, impls
    impls["cython"] = fast
    if os.environ.get(PURE_PYTHON) == "1":
        return "python", pure, impls
    return "cython", fast, impls
