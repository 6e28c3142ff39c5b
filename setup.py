"""Builds the Cython extensions in ext/ into the ordertrack package.

`pip install .` and `pip install -e .` both compile them; pyproject.toml holds the metadata.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("ordertrack._wheel", ["ext/timer_wheel.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
