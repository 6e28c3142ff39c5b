"""Builds the Cython extensions into the ordertrack package.

`pip install .` and `pip install -e .` both compile them; pyproject.toml holds the metadata.

PURE_MODE: one text, two builds (Cython's pure-Python mode). `src/ordertrack/push/NAME.py` is
copied to `ext/ordertrack/push/_NAME.py` (generated, not tracked) and compiled with the
`_NAME.pxd` that declares its C layout (`_NAME.pyi` beside it types the build) as
`ordertrack.push._NAME`; interpreted, the same NAME.py is the twin, used when the extension is
not built (or with ORDERTRACK_PURE_PYTHON=1).

Cython finds a module's .pxd by the module's full name, hence the package layout under ext/
(include_path).
"""
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
PURE_MODE = ("connection", "fanout", "pubsub_reader", "timer_wheel")

for name in PURE_MODE:  # copied only when changed, so cythonize sees what changed
    source, copy = HERE / "src/ordertrack/push" / f"{name}.py", HERE / "ext/ordertrack/push" / f"_{name}.py"
    if not copy.exists() or copy.read_bytes() != source.read_bytes():
        shutil.copyfile(source, copy)

extensions = [
    Extension(f"ordertrack.push._{name}", [f"ext/ordertrack/push/_{name}.py"],
              extra_compile_args=["-O2"])
    for name in PURE_MODE
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(HERE / "ext")],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
