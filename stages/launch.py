"""DVC command of the sharded stages: `python -m stages.launch {extract|decode} [args]` runs
`stages.<stage>` under the launcher of params.yaml's `launch` section (one process when null;
torchrun, `accelerate launch` or srun for several). The launcher is read here, not declared as
a stage parameter, so it never changes the stages' identity in dvc.lock.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import run_entry
from pipeline.params_file import DEFAULT_PARAMS, load_params
from pipeline.scaling.params import LaunchParams

SHARDED_STAGES = ("extract", "decode")


def command(argv: list[str] | None = None) -> list[str]:
    """The command line of the launched stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=SHARDED_STAGES)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    args, rest = parser.parse_known_args(argv)
    launch = LaunchParams.from_dict(load_params(args.params).get("launch"))
    return launch.command(sys.executable, f"stages.{args.stage}", ["--params", str(args.params), *rest])


def main(argv: list[str] | None = None) -> None:
    cmd = command(argv)
    print("launch:", " ".join(cmd), file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(run_entry(main))
