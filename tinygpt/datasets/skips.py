"""The one home of skip accounting: what a run had to skip (unreadable image, corrupt shard, sample
without caption), recorded where it happens and counted by the loader that served the data.

A bad file must never kill a multi-day run, and must never vanish silently either: every skip is
recorded and the training loader's `skips.report()` summarises them at the end of the run.

Two halves, because DataLoader workers are separate processes:
  * `record()` runs wherever a dataset reads (a worker, or the main process with num_workers=0) and
    queues the skip in a process-local buffer.  It has to be a module-level buffer: the dataset
    code that notices a bad file knows nothing of the loader that will serve its batch, and in a
    worker the loader object is a copy that nobody reads back.  `collate()` (which runs right after
    the dataset calls of one batch, in the same process) takes the buffer with `drain()` and ships
    it inside the batch under SKIPS_KEY.
  * a `SkipCounter` belongs to one loader (MultiSourceLoader's `skips`), which `absorb()`s the
    records its batches carry.  So the totals are per loader: two loaders in one process never mix
    counts, and nothing but the buffer is global.
"""
from __future__ import annotations

import logging
import os
from collections import Counter

log = logging.getLogger(__name__)

SKIPS_KEY = "_skips"
_WARN_FIRST = 3  # per (dataset, kind) and process: enough to find the bad file, not enough to flood logs
_EXAMPLES = 3

# This process's records not yet shipped in a batch: (pid, dataset, kind, detail).  The pid tells a
# forked worker's own records from the copy of its parent's buffer it inherited.
_pending: list[tuple[int, str, str, str]] = []
_warned: Counter = Counter()


def record(dataset: str, kind: str, detail: str) -> None:
    """Note one skipped item: `kind` is e.g. "unreadable image", `detail` names the file."""
    _pending.append((os.getpid(), dataset, kind, detail))
    if _warned[(dataset, kind)] < _WARN_FIRST:
        _warned[(dataset, kind)] += 1
        log.warning("%s: skipped %s: %s", dataset, kind, detail)


def pending() -> bool:
    """This process holds records that no batch has carried yet."""
    pid = os.getpid()
    return any(p == pid for p, *_ in _pending)


def drain() -> list[tuple[str, str, str]]:
    """Take the records queued in this process (a forked worker ignores its parent's queue)."""
    pid = os.getpid()
    mine = [(d, k, x) for p, d, k, x in _pending if p == pid]
    _pending.clear()
    return mine


class SkipCounter:
    """Skip totals of one loader, with a few example files per (dataset, kind)."""

    def __init__(self, records=()):
        self._totals: Counter = Counter()
        self._examples: dict[tuple[str, str], list[str]] = {}
        self.merge(records)

    def merge(self, records) -> None:
        """Count records [(dataset, kind, detail), ...] (from `drain()`, possibly in another process)."""
        for dataset, kind, detail in records:
            self._totals[(dataset, kind)] += 1
            examples = self._examples.setdefault((dataset, kind), [])
            if len(examples) < _EXAMPLES:
                examples.append(detail)

    def absorb(self, batch):
        """Remove the skip records a batch carries and count them; returns the batch."""
        if isinstance(batch, dict) and SKIPS_KEY in batch:
            self.merge(batch.pop(SKIPS_KEY))
        return batch

    def counts(self) -> dict[str, dict[str, int]]:
        """{dataset: {kind: n}} for everything counted so far."""
        out: dict[str, dict[str, int]] = {}
        for (dataset, kind), n in sorted(self._totals.items()):
            out.setdefault(dataset, {})[kind] = n
        return out

    def total(self) -> int:
        return sum(self._totals.values())

    def report(self) -> str:
        """One line per (dataset, kind) with a few example files; "nothing skipped" when clean."""
        if not self._totals:
            return "data: nothing skipped"
        lines = [f"data: skipped {self.total()} item(s)"]
        for (dataset, kind), n in sorted(self._totals.items()):
            lines.append(f"  {dataset}: {n} x {kind} (e.g. {'; '.join(self._examples[(dataset, kind)])})")
        return "\n".join(lines)
