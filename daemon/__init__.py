"""studiod.daemon: lifecycle, command line, config, audio I/O, state, logs and mDNS."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("studiod")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
