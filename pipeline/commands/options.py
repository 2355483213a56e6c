"""What several ``vaebench`` commands share, defined once: the ``--params`` option, and how an
error a user can act on is shown (one line, ``Error: ...``, exit status 1) rather than as a traceback.

It imports no stage module (and so not torch): a user error is recognised by its base class
(:class:`pipeline.plumbing.errors.UserError`, or the built-in classes below), so that
``vaebench compare`` and ``vaebench data --help`` start without loading the training code."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from pipeline.plumbing.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")
# Errors that describe the user's input, files or machine (not a bug): shown in one line.
# FloatingPointError is the base of vae_core's NonFiniteLossError (a loss that became NaN or inf).
USER_ERRORS = (ValueError, OSError, FloatingPointError, UserError)


def params_option(help: str = "The params file (every knob of vaebench).") -> callable:
    """``--params PATH`` (default params.yaml), passed to the command as ``params_path``."""
    return click.option("--params", "params_path", type=click.Path(path_type=Path), default=DEFAULT_PARAMS,
                        show_default=True, help=help)


def describe(err: Exception) -> str:
    """The message of a user error; an operating-system error names the path and what went wrong."""
    if isinstance(err, OSError) and err.strerror:
        if err.filename:  # raised by the operating system about a path
            return (f"cannot use {err.filename} ({err.strerror}). Fix: choose a location that exists and that you "
                    f"can write (an option such as --out, or params.yaml), or make this one writable")
        return err.strerror  # one of ours with its own message (pipeline.plumbing.files.DiskFullError)
    return str(err)


def user_errors(command):
    """Decorate a click command so that its user errors end the command with a one-line message."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as err:
            raise click.ClickException(describe(err)) from err

    return wrapper
