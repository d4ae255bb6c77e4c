"""The one unit of every evaluation figure (AP, AR, mIoU) wherever it is shown.

Figures are fractions in [0, 1] (0.5 = half; never percent): metrics.json, `dvc metrics
show`, the console line, report.md, `vlmsam compare` and the plots all use it, and each
names it with `UNIT`.
"""

from __future__ import annotations

import math

UNIT = "fraction"  # the value of metrics.json's "unit"
UNIT_TEXT = "fractions in [0, 1] (1 = perfect; not percent)"
DECIMALS = 3


def format_figure(value, missing: str = "—") -> str:
    """A figure as text in `UNIT` with `DECIMALS` decimals; `missing` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{float(value):.{DECIMALS}f}"
