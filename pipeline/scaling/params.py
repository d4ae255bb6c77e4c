"""The `launch` section of params.yaml."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pipeline.params_file import reject_unknown


@dataclass(frozen=True)
class LaunchParams:
    """Parameters of the `launch` section: how `python -m stages.launch <stage>` (the DVC
    command of the extract and decode stages) starts the stage.

    launcher  command prefix that runs a Python module given as `-m <module> <args>`; null =
              one process of the current interpreter. E.g. 'torchrun --nproc_per_node 8',
              'accelerate launch --multi_gpu --num_processes 8', 'srun python'. No stage
              declares it as a DVC parameter: a sharded run writes the bytes of a single
              process, so changing the launcher re-runs nothing.
    """

    launcher: str | None = None

    def __post_init__(self) -> None:
        if self.launcher is not None and (not isinstance(self.launcher, str) or not shlex.split(self.launcher)):
            raise ValueError(f"launch.launcher must be null or a command, got {self.launcher!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "LaunchParams":
        """Build from the `launch` section; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("launch", d, cls)
        return cls(**d)

    def command(self, python: str, module: str, args: list[str]) -> list[str]:
        """The command line that runs `module` with `args` under the launcher."""
        prefix = shlex.split(self.launcher) if self.launcher is not None else [python]
        return [*prefix, "-m", module, *args]
