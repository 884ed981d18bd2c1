"""hopforge: multi-hop deep-search training data from Wikipedia dumps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hopforge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

from hopforge.errors import HopforgeError  # noqa: E402

__all__ = ["HopforgeError", "__version__"]
