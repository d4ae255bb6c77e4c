"""The project's error types and the one entry wrapper that turns them into one line.

Every error the pipeline raises for a user's mistake (bad parameters, bad input files or records,
missing or unloadable weights, caches that do not fit together) derives from `VlmsamError`; its
message names the file, record or parameter. `run_entry` runs a command-line entry (each
`stages/*.py` and the `vlmsam` command): such an error prints as one line on stderr and exits 1;
the traceback is shown only with `--debug` or `VLMSAM_DEBUG=1`. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "VLMSAM_DEBUG"


class VlmsamError(Exception):
    """Base of the project's errors: a user-fixable mistake, described in one line."""


class ParamsError(VlmsamError, ValueError):
    """A parameter file or parameter value that the pipeline cannot use; the message names the key."""


class InputFileError(VlmsamError, FileNotFoundError):
    """An input file (parameters, cache, predictions) that is not where it was expected."""


def debug_requested(argv: Sequence[str]) -> bool:
    """True when `--debug` is among the arguments or VLMSAM_DEBUG is set to a true value."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def one_line(error: BaseException) -> str:
    """The error's message on one line (continuation lines joined with ' | ')."""
    text = str(error).strip() or type(error).__name__
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def run_entry(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` (default: sys.argv[1:], `--debug` removed); the exit status.

    A `VlmsamError` prints as 'error: <message>' on one line and gives status 1, unless
    debugging was requested, in which case it propagates with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        main(argv)
    except VlmsamError as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0
