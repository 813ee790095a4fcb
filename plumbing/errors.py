"""Errors that end a command with advice rather than a traceback.

Raise a subclass of `StartupError` when the user can fix the cause (a peer that does not
answer, a corrupt checkpoint, a history file from another run); the CLI prints its message
and exits with code 3. Everything else is a bug and keeps its traceback.
"""


class StartupError(RuntimeError):
    """A failure the message explains and the user can fix."""
