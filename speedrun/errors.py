"""One exception type for every problem a user can fix (bad input, bad files, bad flags).

The CLI prints these as a one-line message and exits non-zero instead of a traceback.

May import: nothing of the harness.
"""


class SpeedrunError(Exception):
    """A clear, user-facing error."""
