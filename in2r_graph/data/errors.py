"""The error type of the data layer."""

from __future__ import annotations

import tokenize

__all__ = ["DataError", "NPY_READ_ERRORS"]

NPY_READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, TypeError, tokenize.TokenError)
"""Exceptions that ``np.load`` raises for a damaged ``.npy`` file.

NumPy parses the header with ``ast.literal_eval``, so a damaged header can
raise SyntaxError or tokenize.TokenError as well as ValueError (numpy 2.4).
"""


class DataError(ValueError):
    """Invalid input data: a missing or malformed file, a wrong shape, a bad value.

    Every invalid-input problem in :mod:`in2r_graph.data` raises this type. The
    message names the file (or the array's source), the value found and what
    was expected, so that the command line can show it as a single line.
    It subclasses :class:`ValueError`, so callers that catch ``ValueError``
    also catch it.
    """
