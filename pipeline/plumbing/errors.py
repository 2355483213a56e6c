"""The base of every error a user can act on (bad input, a locked run, a failed download): the
command line shows it as one ``Error: ...`` line, not a traceback (:mod:`pipeline.commands.options`).
It lives here, below everything, so that the command line can catch it without importing the
modules that raise it (and torch with them)."""


class UserError(Exception):
    """An error that describes the user's input, files or machine, not a bug; its message names the
    problem and the fix."""
