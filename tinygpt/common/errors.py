"""The one error policy of every entry point (`train.py`, `demo.py`, `eval_scripts/*`,
`python -m tinygpt.inspect / doctor / evaluation.score`).

A user error -- a bad config key, a missing or corrupt weight file, bad data, a malformed prediction
file, a device that is not there -- is a `UserError` (each module's own error class derives from
it) whose message names the file and the key.  `entry_point` turns it into one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, Optional


class UserError(ValueError):
    """Bad input from the user; the message says which file / key and what to do."""


def entry_point(prog: str) -> Callable:
    """Decorate `main(argv=None, ...) -> int`: a UserError becomes `prog: error: message` + exit 2."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[list[str]] = None, *args, **kwargs) -> int:
            try:
                return main(argv, *args, **kwargs)
            except UserError as exc:
                message = " ".join(str(exc).split()) or type(exc).__name__  # one line, always
                print(f"{kwargs.get('prog', prog)}: error: {message}", file=sys.stderr)
                return 2

        return run

    return wrap
