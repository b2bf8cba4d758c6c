"""Exit codes of the ``hpo`` command and the one exception type its commands raise."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the study failed, or the command could not do its work
EXIT_INVALID = 2  # the manifest or the command line is invalid
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C


class CLIError(Exception):
    """A problem to show the user as one message (no traceback), with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
