"""``vaebench``: the one command-line entry; DVC stages only call it.

Each command's module is imported only when that command runs (or its ``--help`` is asked for):
``vaebench compare`` and ``vaebench data`` start without importing torch, and no command pays for
another's imports.
"""
from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of its click command (pipeline/commands/, one module a group)
COMMANDS = {
    "data": "pipeline.commands.data:data",
    "train": "pipeline.commands.train:train",
    "evaluate": "pipeline.commands.evaluate:evaluate",
    "figures": "pipeline.commands.figures:figures",
    "report": "pipeline.commands.figures:report",
    "compare": "pipeline.commands.compare:compare",
    "bench": "pipeline.commands.bench:bench",
    "distribute": "pipeline.commands.distribute:distribute",
    "cluster-plan": "pipeline.commands.cluster_plan:cluster_plan",
    "campaign": "pipeline.commands.campaign:campaign",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy-loading
    pattern); the listing in ``vaebench --help`` imports every command to show its summary."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            module, attribute = self.lazy_commands[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaebench")
def main() -> None:
    """vaebench: regenerate the figures of Auto-Encoding Variational Bayes (Kingma & Welling)."""


if __name__ == "__main__":
    main()
