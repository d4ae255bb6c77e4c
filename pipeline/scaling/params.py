"""The `launch` section of params.yaml."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pipeline.errors import ParamsError
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
        if self.launcher is not None:
            check_process_count(shlex.split(self.launcher))

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


# launcher options that set the number of processes per node (torchrun and `accelerate launch`);
# torchrun also takes the words below instead of a number
_PROCESS_COUNT_OPTIONS = ("--nproc_per_node", "--nproc-per-node", "--num_processes", "--num-processes")
_TORCHRUN_PROCESS_WORDS = ("auto", "cpu", "gpu", "xpu")


def check_process_count(words: list[str]) -> None:
    """ParamsError naming launch.launcher when it asks for a process count that is not a
    positive integer (torchrun asserts on 0 with a traceback; accelerate fails later)."""
    for i, word in enumerate(words):
        option, sep, value = word.partition("=")
        if option not in _PROCESS_COUNT_OPTIONS:
            continue
        if not sep:
            value = words[i + 1] if i + 1 < len(words) else ""
        if value in _TORCHRUN_PROCESS_WORDS and "nproc" in option:
            continue
        if not (value.isdigit() and int(value) > 0):
            raise ParamsError(f"launch.launcher {shlex.join(words)!r}: {option} must be a positive number of "
                              f"processes, got {value!r}")
