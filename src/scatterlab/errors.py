"""User-facing errors: each message says what went wrong and what to do.

The entry points print these as one line and exit with code 2, without a traceback.
"""


class ScatterlabError(Exception):
    """Base class of the errors caused by the user's input, not by a bug."""

    exit_code = 2


class ConfigError(ScatterlabError):
    """A config value is invalid (wrong type, out of range, inconsistent)."""


class DataError(ScatterlabError):
    """A data set is missing, unreadable or cannot be downloaded."""


class CheckpointError(ScatterlabError):
    """A checkpoint is missing, corrupt, or of another architecture."""


class DivergedError(ScatterlabError):
    """Training produced a non-finite loss: the run stops instead of training on NaNs."""

    exit_code = 3

    def __init__(self, message: str, step: int = -1, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint
