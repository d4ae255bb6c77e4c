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

from pipeline.errors import ParamsError, run_entry
from pipeline.params_file import DEFAULT_PARAMS, load_params, reading
from pipeline.scaling.params import LaunchParams

SHARDED_STAGES = ("extract", "decode")


def command(argv: list[str] | None = None) -> list[str]:
    """The command line of the launched stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=SHARDED_STAGES)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    args, rest = parser.parse_known_args(argv)
    with reading(args.params):
        launch = LaunchParams.from_dict(load_params(args.params).get("launch"))
    return launch.command(sys.executable, f"stages.{args.stage}", ["--params", str(args.params), *rest])


def main(argv: list[str] | None = None) -> None:
    cmd = command(argv)
    print("launch:", " ".join(cmd), file=sys.stderr, flush=True)
    try:
        os.execvp(cmd[0], cmd)
    except (FileNotFoundError, PermissionError) as e:
        raise ParamsError(f"launch.launcher: program {cmd[0]!r} cannot be started "
                          f"({e.strerror}); install it, put it on PATH or give its full path") from e


if __name__ == "__main__":
    sys.exit(run_entry(main))
