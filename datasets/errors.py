"""The one exception the datasets package raises for bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or inconsistent input data; the message names the file, column, symbol or date at fault."""
