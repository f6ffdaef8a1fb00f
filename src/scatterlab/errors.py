"""User-facing errors: each message says what went wrong and what to do.

The entry points print these as one line and exit with code 2, without a traceback.
"""


class ScatterlabError(Exception):
    """Base class of the errors caused by the user's input, not by a bug."""


class ConfigError(ScatterlabError):
    """A config value is invalid (wrong type, out of range, inconsistent)."""


class DataError(ScatterlabError):
    """A data set is missing, unreadable or cannot be downloaded."""


class CheckpointError(ScatterlabError):
    """A checkpoint is missing, corrupt, or of another architecture."""
