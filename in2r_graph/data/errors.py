"""The error type of the data layer."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Invalid input data: a missing or malformed file, a wrong shape, a bad value.

    Every invalid-input problem in :mod:`in2r_graph.data` raises this type. The
    message names the file (or the array's source), the value found and what
    was expected, so that the command line can show it as a single line.
    It subclasses :class:`ValueError`, so callers that catch ``ValueError``
    also catch it.
    """
