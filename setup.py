"""Builds the Cython extensions in ext/ into the ordertrack package.

`pip install .` and `pip install -e .` both compile them; pyproject.toml holds the metadata.
Each extension has a pure-Python twin in the package, used when it is not built.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("ordertrack._wheel", ["ext/timer_wheel.pyx"]),
    Extension("ordertrack.push._pubsub_reader", ["ext/pubsub_reader.pyx"],
              extra_compile_args=["-O2"]),
    Extension("ordertrack.push._fanout", ["ext/fanout.pyx"], extra_compile_args=["-O2"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
