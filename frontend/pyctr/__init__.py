"""pyctr: rootless Linux containers. This package is the unprivileged frontend."""

__version__ = "0.1.0"
