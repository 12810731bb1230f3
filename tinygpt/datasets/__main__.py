"""`python -m tinygpt.datasets check --cfg-path STAGE.yaml [--samples N]`: the data dry run
(tinygpt/datasets/check.py; docs/own-data.md)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "check":
        print("usage: python -m tinygpt.datasets check --cfg-path STAGE.yaml [--samples N] [--max-records N] "
              "[--new-style] [--options k=v ...]", file=sys.stderr)
        return 2
    from tinygpt.datasets.check import main as check

    return check(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
