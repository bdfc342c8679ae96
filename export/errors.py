"""The export pipeline's one error type: which check failed, and expected vs actual in the message."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A failed export step; ``check`` names the step (e.g. ``parity``) so users and tests can tell them apart."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"[{check}] {message}")
        self.check = check
