"""Exceptions that carry a message meant for the user.

The command line prints a :class:`CracksegError` as one line and exits with a
non-zero status; any other exception is a bug and keeps its traceback.
"""


class CracksegError(Exception):
    """A problem with the user's input, files or settings (not a bug)."""


class InputError(CracksegError):
    """An input file or array cannot be used as given."""


class ModelError(CracksegError):
    """A model directory is missing, incompatible or fails verification."""
