"""Options shared by several ``vaebench`` commands, defined once."""
from __future__ import annotations

from pathlib import Path

import click

DEFAULT_PARAMS = Path("params.yaml")


def params_option(help: str = "The params file (every knob of vaebench).") -> callable:
    """``--params PATH`` (default params.yaml), passed to the command as ``params_path``."""
    return click.option("--params", "params_path", type=click.Path(path_type=Path), default=DEFAULT_PARAMS,
                        show_default=True, help=help)
