"""ordertrack: real-time order tracking."""

#: the one place the version lives (pyproject.toml reads it; `ordertrack --version` prints it)
__version__ = "0.1.0"
