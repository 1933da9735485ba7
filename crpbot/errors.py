"""One exception type for problems the user can fix.

The CLI prints these as a single line (``crpbot: error: ...``) and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class CrpbotError(Exception):
    """A user-facing error: bad input, bad config, missing resource."""
