"""The one check of a number read from a file (a config, an annotation file): what is wrong with it,
as the end of a message whose start (file, key, record) the caller knows."""
from __future__ import annotations

import math
from typing import Any, Optional

INT64 = 2**63  # integers reach torch (seeds, sizes, step counts) as 64-bit ints


def number_problem(value: Any, low: Optional[float] = None, high: Optional[float] = None, *,
                   above: bool = False, below: bool = False) -> Optional[str]:
    """None when `value` is an int or float (never a boolean: `true` where a number belongs is a
    mistake, not a 1), finite, within 64 bits if an integer, and in [low, high] (`above`: > low,
    `below`: < high; None bounds are open); otherwise what is wrong, e.g. "it must be >= 1"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"it must be a number, not {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "it must be a finite number"
    if isinstance(value, int) and not -INT64 <= value < INT64:
        return "it must fit in a 64-bit integer"
    if (low is not None and (value <= low if above else value < low)) or \
            (high is not None and (value >= high if below else value > high)):
        want = " and ".join(w for w in (
            None if low is None else f"{'>' if above else '>='} {low}",
            None if high is None else f"{'<' if below else '<='} {high}") if w)
        return f"it must be {want}"
    return None


def shown(value: Any) -> str:
    """A value for a message: a huge integer by its size, not its thousands of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"a {len(str(abs(value)))}-digit integer"
    return repr(value)
