"""The one exception type for user mistakes.

Library code raises :class:`NoseError` with a message that says what was wrong and how to fix
it; the CLI prints that message as one line and exits non-zero. Anything else is a bug and keeps
its traceback.
"""


class NoseError(ValueError):
    """A problem with the user's input or environment, explained in one line."""
