"""One error type for everything a user can cause: the CLI prints it as one line and exits 2."""


class WeakspotError(Exception):
    """Bad input or an unusable environment; the message names the file and the problem."""
