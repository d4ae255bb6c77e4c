"""Every `vlmsam` subcommand answers --help, and every option has help text."""

import click
import typer
from typer.testing import CliRunner

from pipeline.cli import app

EXPECTED = {"synth", "extract", "sample", "decode", "merge", "evaluate", "compare", "demo", "predict", "visualize", "export", "weights"}


def test_every_subcommand_has_help():
    group = typer.main.get_command(app)
    assert set(group.commands) == EXPECTED
    runner = CliRunner()
    for name, command in group.commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert command.help, f"{name} has no description"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"vlmsam {name}: option {param.opts} has no help text"
