"""One exception type for every failure a user can fix; the CLI prints its message and exits 1."""


class HypergenError(Exception):
    """An error whose message says what went wrong and what to do about it."""
