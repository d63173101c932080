"""User-facing errors: the CLI prints their message on one line and exits non-zero.

Raise these (or a subclass) for bad input a user can fix; keep `assert` for internal invariants.
Set UNMASK_DEBUG=1 to see the full traceback instead.
"""


class UnmaskError(Exception):
    """A problem with the user's input, files or settings, explained in the message."""


class ConfigError(UnmaskError, ValueError):
    """A config file or --set override that does not fit the schema."""
