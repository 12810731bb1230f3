"""Mix several dataloaders by `sample_ratio`, deterministically and resumably.

Each step picks ONE source with probability ratio_i / sum(ratios) and returns that source's next
batch (a batch never mixes datasets: their sample dicts differ, and so do their batch sizes).  The
pick comes from a seeded torch.Generator, so every rank of a DDP run draws the same source sequence
and a resumed run continues it exactly.  A source that runs out starts its next epoch (its sampler
and dataset get `set_epoch`, so the order and augmentations change).

Data position (`state_dict()`): the generator state and, per source, batches drawn in total, the
epoch and the batches drawn within it.  `load_state_dict()` puts every source back at that position:
a ResumableSampler starts mid-epoch without loading anything, a ShardStream skips without decoding,
anything else is replayed batch by batch.

Skipped items (see skips.py) are counted in the loader's own `skips`, from the records its batches
carry: `loader.skips.report()` is what this loader skipped, whatever else runs in the process.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import torch

from tinygpt.datasets import skips
from tinygpt.datasets.base import DataError

log = logging.getLogger(__name__)

_NO_BATCH = "no batch in a whole epoch (empty, smaller than one batch, or nothing readable)"


def _sampler(loader):
    return getattr(loader, "sampler", None)


def _dataset(loader):
    return getattr(loader, "dataset", None)


class MultiSourceLoader:
    """Infinite iterator of batches from `sources` = [(name, loader, ratio), ...]."""

    def __init__(self, sources: Sequence[tuple[str, Iterable, float]], seed: int = 0):
        if not sources:
            raise ValueError("MultiSourceLoader: no data source")
        names = [name for name, _, _ in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"MultiSourceLoader: duplicate source names in {names}")
        for name, _, ratio in sources:
            if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
                raise ValueError(f"datasets.{name}.sample_ratio must be a positive number, got {ratio!r}")
        self.names = names
        self.loaders = [loader for _, loader, _ in sources]
        self.ratios = [float(r) for _, _, r in sources]
        self._weights = torch.tensor(self.ratios, dtype=torch.float64)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        n = len(sources)
        self.drawn, self.epoch, self.in_epoch = [0] * n, [0] * n, [0] * n
        self._readable = [0] * n  # batches with samples in the source's current epoch
        self._iters: list = [None] * n
        self.skips = skips.SkipCounter()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self.next_with_source()[1]

    def next_with_source(self) -> tuple[str, dict]:
        """Like next(), also naming the source (for per-dataset logging)."""
        i = int(torch.multinomial(self._weights, 1, generator=self.generator))
        return self.names[i], self._pull_samples(i)

    def _pull_samples(self, i: int) -> dict:
        """The source's next batch that holds samples: a batch whose every image was unreadable is
        `{}` once its skips are counted, and the next one is drawn."""
        while True:
            batch = self.skips.absorb(self._pull(i))
            if batch:
                self._readable[i] += 1
                return batch

    # ------------------------------------------------------------------ iteration
    def _start(self, i: int) -> None:
        loader = self.loaders[i]
        for obj in (_sampler(loader), _dataset(loader)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch[i])
        generator = getattr(loader, "generator", None)
        if isinstance(generator, torch.Generator):  # worker seeds: a function of (seed, source, epoch)
            generator.manual_seed(self.seed * 1_000_003 + 7_919 * i + self.epoch[i])
        self._iters[i] = iter(loader)
        # Worker processes took their copy of the dataset inside iter(); a pending fast-forward must
        # not apply again to the next epoch.
        ds = _dataset(loader)
        if hasattr(ds, "skip_batches"):
            ds.skip_batches(0, 1, 1)

    def _pull(self, i: int):
        if self._iters[i] is None:
            self._start(i)
        try:
            batch = next(self._iters[i])
        except StopIteration:
            if not self.in_epoch[i]:  # this pass served nothing: another would serve nothing either
                raise self._unreadable(i, _NO_BATCH) from None
            if not self._readable[i]:
                raise self._unreadable(i, "a whole epoch without one readable sample") from None
            self.epoch[i] += 1
            self.in_epoch[i] = self._readable[i] = 0
            self._start(i)
            try:
                batch = next(self._iters[i])
            except StopIteration:
                raise self._unreadable(i, _NO_BATCH) from None
        self.drawn[i] += 1
        self.in_epoch[i] += 1
        return batch

    def _unreadable(self, i: int, what: str) -> DataError:
        """The error of a source that served nothing, with what was skipped.  Records a pass left in
        this process (num_workers 0: no batch carried them) are counted first; a worker process that
        served no batch takes its records with it, so then the message does not claim a clean run."""
        self.skips.merge(skips.drain())
        report = self.skips.report() if self.skips.total() else (
            "no skip reached this process (DataLoader workers that serve no batch keep their records: "
            "run.num_workers=0 shows them)")
        return DataError(f"datasets.{self.names[i]}: {what}; {' '.join(report.split())}")

    # ------------------------------------------------------------------ data position
    def state_dict(self) -> dict:
        """Plain Python (JSON-able): the generator state and each source's position."""
        return {
            "seed": self.seed,
            "generator": self.generator.get_state().tolist(),
            "sources": {name: {"drawn": self.drawn[i], "epoch": self.epoch[i], "in_epoch": self.in_epoch[i]}
                        for i, name in enumerate(self.names)},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`.  A source absent from the state starts fresh; a state entry for a
        source that no longer exists is reported and ignored."""
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        saved = state.get("sources", {})
        for name in sorted(set(saved) - set(self.names)):
            log.warning("data position: source %r is in the checkpoint but not in the config; ignored", name)
        for i, name in enumerate(self.names):
            pos = saved.get(name)
            if pos is None:
                log.warning("data position: source %r is new since the checkpoint; it starts at the beginning", name)
                pos = {"drawn": 0, "epoch": 0, "in_epoch": 0}
            self.drawn[i], self.epoch[i], self.in_epoch[i] = int(pos["drawn"]), int(pos["epoch"]), int(pos["in_epoch"])
            self._readable[i] = self.in_epoch[i]  # batches served before the checkpoint had samples
            self._seek(i)

    def _seek(self, i: int) -> None:
        loader, k = self.loaders[i], self.in_epoch[i]
        self._iters[i] = None  # the next pull starts epoch self.epoch[i] (at its beginning if k == 0)
        if k == 0:
            return
        sampler, ds = _sampler(loader), _dataset(loader)
        batch_size = getattr(loader, "batch_size", None)
        if hasattr(sampler, "set_start") and batch_size:
            sampler.set_start(k * batch_size)  # ResumableSampler: no sample is loaded to get there
        elif hasattr(ds, "skip_batches") and batch_size:
            ds.skip_batches(k, batch_size, getattr(loader, "num_workers", 0))
            self._start(i)  # iter() hands the skip to the readers, then _start clears our copy
        else:
            # No cheap way to seek: replay.  Skips seen while replaying were counted before the checkpoint.
            self._start(i)
            for _ in range(k):
                batch = next(self._iters[i])
                if isinstance(batch, dict):
                    batch.pop(skips.SKIPS_KEY, None)
