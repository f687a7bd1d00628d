"""Errors that reach the user as one clear line, never as a traceback."""


class HakitError(Exception):
    """Base of every error hakit reports to the user; str() is the message."""

    exit_code = 1


class UsageError(HakitError):
    """The command line itself is wrong."""

    exit_code = 2


class DaemonNotRunning(HakitError):
    """A command needs hakitd and it does not answer on its socket."""

    exit_code = 3
