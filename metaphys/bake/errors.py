"""The bake's error type, below the driver and the writers that raise it."""
from __future__ import annotations


class BakeError(RuntimeError):
    """A bake that cannot start (``code`` 2: bad input, nothing written) or that failed at a named
    frame (``code`` 1: finished frames kept)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def input_error(message: str) -> BakeError:
    return BakeError(message, code=2)
