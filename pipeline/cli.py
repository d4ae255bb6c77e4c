"""The `vlmsam` command. Each subcommand lives with its feature; heavy imports stay inside them."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Zero-shot amodal instance segmentation: VLM attention -> point prompts -> EfficientSAM.",
    no_args_is_help=True,
    add_completion=False,
)

# Subcommands are registered below, one line each, in pipeline order.
from pipeline.weights import weights_command  # noqa: E402
app.command("weights")(weights_command)
from pipeline.synth.cli import synth_command  # noqa: E402
app.command("synth")(synth_command)
from pipeline.evaluation.command import evaluate_command  # noqa: E402
app.command("evaluate")(evaluate_command)
from pipeline.attention.command import extract_command  # noqa: E402
app.command("extract")(extract_command)
from pipeline.decoding.cli import decode_command  # noqa: E402
app.command("decode")(decode_command)
from pipeline.sampling.command import sample_command  # noqa: E402
app.command("sample")(sample_command)
from pipeline.demo import demo_command  # noqa: E402
app.command("demo")(demo_command)
from pipeline.figure_commands import predict_command, visualize_command  # noqa: E402
app.command("predict")(predict_command)
app.command("visualize")(visualize_command)
from pipeline.compare import compare_command  # noqa: E402
app.command("compare")(compare_command)
