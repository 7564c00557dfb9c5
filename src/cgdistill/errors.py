"""The one exception type that carries a user-facing sentence to the CLI."""

from __future__ import annotations


class CgdistillError(Exception):
    """A problem the user can fix: the CLI prints the message as one sentence and exits.

    ``exit_code`` follows the design: 2 for bad usage or bad input, 1 when the work
    itself failed (some inputs failed, training diverged).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class WorkFailed(CgdistillError):
    """The inputs were fine but the work did not succeed (exit code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)
