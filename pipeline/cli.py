"""The `vlmsam` command. Each subcommand lives with its feature; heavy imports stay inside them."""

from __future__ import annotations

import sys

import typer

from pipeline.attention.command import extract_command
from pipeline.compare import compare_command
from pipeline.decoding.cli import decode_command
from pipeline.demo import demo_command
from pipeline.errors import run_entry
from pipeline.evaluation.command import evaluate_command
from pipeline.export.command import export_command
from pipeline.figure_commands import predict_command, visualize_command
from pipeline.sampling.command import sample_command
from pipeline.scaling.command import merge_command
from pipeline.synth.cli import synth_command
from pipeline.weights import weights_command


class EntryTyper(typer.Typer):
    """A Typer app whose command-line call goes through `run_entry`: the project's errors print
    as one line and exit 1 (a traceback with --debug or VLMSAM_DEBUG=1)."""

    def __call__(self, args=None, **kwargs):
        code = run_entry(lambda argv: typer.Typer.__call__(self, argv, **kwargs), args)
        if code:
            sys.exit(code)


app = EntryTyper(
    help="Zero-shot amodal instance segmentation: VLM attention -> point prompts -> EfficientSAM.",
    no_args_is_help=True,
    add_completion=False,
)

# in pipeline order
app.command("synth")(synth_command)
app.command("extract")(extract_command)
app.command("sample")(sample_command)
app.command("decode")(decode_command)
app.command("merge")(merge_command)
app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)
app.command("demo")(demo_command)
app.command("predict")(predict_command)
app.command("visualize")(visualize_command)
app.command("export")(export_command)
app.command("weights")(weights_command)
