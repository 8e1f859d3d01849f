"""The package version, in one place: the installed distribution's metadata (pyproject.toml)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hardymer")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
