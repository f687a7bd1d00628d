"""hakit: high availability for critical applications on Linux."""

__version__ = "0.1.0"
