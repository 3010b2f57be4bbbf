"""The one exception type users see: a message that says what went wrong, where, and how to fix it."""


class LocomlxError(Exception):
    """An error meant for the person at the keyboard; the CLI prints it as one line."""


class LostRank(LocomlxError):
    """A rank of a distributed run (mlx.launch) stopped before the others were done with it."""
