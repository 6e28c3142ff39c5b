"""Builds the Cython extensions in ext/ into the ordertrack package.

`pip install .` and `pip install -e .` both compile them; pyproject.toml holds the metadata.
ext/ mirrors the package: `ext/ordertrack/push/_NAME.pyx`, with its `_NAME.pxd` and `_NAME.pyi`
beside it, builds `ordertrack.push._NAME`, whose pure-Python twin `ordertrack/push/NAME.py`
is used when it is not built (or with ORDERTRACK_PURE_PYTHON=1). Cython finds a module's .pxd
by the module's full name, hence the package layout under ext/ (include_path).
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

NAMES = ("timer_wheel", "pubsub_reader", "connection", "fanout")

extensions = [
    Extension(f"ordertrack.push._{name}", [f"ext/ordertrack/push/_{name}.pyx"],
              extra_compile_args=["-O2"])
    for name in NAMES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(Path(__file__).parent / "ext")],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
