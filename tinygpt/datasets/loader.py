"""DataLoaders the mixing iterator can resume, the one call that builds a run's training data, and
the one home of the host-side DataLoader policy (worker processes, pinned memory per device).

    loader = build_train_loader(cfg, rank=info.rank, world_size=info.world_size)
    batch = next(loader)                      # {"image": [B,3,S,S], "answer": [...], ...}
    ckpt["data"] = loader.state_dict()        # ... later: loader.load_state_dict(ckpt["data"])
    print(loader.skips.report())              # at the end of the run: what this loader skipped
"""
from __future__ import annotations

import functools
import os
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from tinygpt.common.config import Config, ConfigError, image_statistics
from tinygpt.common.registry import registry
from tinygpt.datasets import skips
from tinygpt.datasets.collate import collate
from tinygpt.datasets.mixing import MultiSourceLoader


# Length bucketing sorts windows of this many batches (HF's LengthGroupedSampler uses 50 too): wide
# enough that most batches hold similar lengths, narrow enough that a batch is still a random draw.
BUCKET_WINDOW_BATCHES = 50


class ResumableSampler(Sampler[int]):
    """A seeded per-epoch permutation, sharded over ranks, that can start mid-epoch.

    Every rank gets size // world_size indices (the remainder is dropped each epoch, so all ranks
    take the same number of steps); `set_start(n)` makes the next pass skip its first n indices.

    With `lengths` (one per sample) the rank's order is bucketed for a DataLoader of `batch_size`:
    each window of BUCKET_WINDOW_BATCHES batches is sorted by length, cut into batches, and the
    batches of the window are shuffled, so a batch pads to a similar length instead of the window's
    longest.  Still a pure function of (seed, epoch, rank), so resuming mid-epoch stays exact.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 lengths: Optional[Sequence[int]] = None, batch_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"lengths has {len(lengths)} entries for {size} samples")
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.rank, self.world_size = rank, world_size
        self.lengths = None if lengths is None else torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = int(batch_size)
        self.epoch = 0
        self._start = 0

    @property
    def per_rank(self) -> int:
        return self.size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, n: int) -> None:
        self._start = int(n)

    def __len__(self) -> int:
        return max(0, self.per_rank - self._start)

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0  # applies to one pass only
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        mine = order[self.rank: self.per_rank * self.world_size: self.world_size]
        if self.lengths is not None and self.shuffle:
            mine = self._bucketed(mine, g)
        return iter(mine[start:].tolist())

    def _bucketed(self, order: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        window = self.batch_size * BUCKET_WINDOW_BATCHES
        out = []
        for w in order.split(window):
            w = w[torch.argsort(self.lengths[w], descending=True, stable=True)]
            full = len(w) // self.batch_size * self.batch_size
            batches = w[:full].view(-1, self.batch_size)
            out += [batches[torch.randperm(len(batches), generator=g)].flatten(), w[full:]]
        # Only the last window can leave a partial batch, and it stays last (drop_last drops it).
        return torch.cat(out)


def worker_settings(requested: Optional[int], device: torch.device | str) -> dict:
    """DataLoader `num_workers` and `pin_memory` for a process computing on `device`.

    num_workers is run.num_workers when the config sets it, else `default_num_workers(device)`.
    Pinned (page-locked) host buffers speed host->device copies; on CPU there is no copy to speed.
    """
    workers = default_num_workers(device) if requested is None else int(requested)
    return {"num_workers": workers, "pin_memory": torch.device(device).type != "cpu"}


def default_num_workers(device: torch.device | str) -> int:
    """DataLoader workers per process, from the CPUs this process may use and LOCAL_WORLD_SIZE.

    On CPU the model itself uses every core through intra-op threads, so workers only steal them:
    none on small machines.  On accelerators the host only decodes/augments images: up to 8.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    if torch.device(device).type == "cpu":
        return 0 if per_process <= 4 else min(4, per_process // 4)
    return max(1, min(8, per_process - 1))


def build_loader(dataset: Dataset, batch_size: int, *, name: str = "dataset", num_workers: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 group_by_length: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over `dataset` with `collate`, resumable by MultiSourceLoader.

    Map-style datasets get a ResumableSampler (bucketed by the dataset's `lengths` when
    `group_by_length`); streams (IterableDataset) shard themselves over rank x worker and keep their
    order.  Workers are not persistent: each epoch re-sends the dataset (with its new epoch) to fresh
    workers.
    """
    if batch_size <= 0:
        raise ConfigError(f"datasets.{name}.batch_size must be positive, got {batch_size}")
    # Its own generator: iterating a DataLoader draws the workers' base seed from it.  Drawn from the
    # global RNG instead, that draw would land after a resume restored the RNG state and move every
    # dropout mask that follows (MultiSourceLoader reseeds it per epoch, so a resumed epoch matches).
    batch_collate = functools.partial(collate, one_instruction=getattr(dataset, "one_instruction_per_batch", False))
    common = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=batch_collate, drop_last=drop_last,
                  persistent_workers=False, pin_memory=pin_memory, generator=torch.Generator())
    if isinstance(dataset, IterableDataset):
        if hasattr(dataset, "set_distributed"):
            dataset.set_distributed(rank, world_size)
        if hasattr(dataset, "batch_size"):  # a stream ships its last skip records in a batch of its own
            dataset.batch_size = batch_size
        return DataLoader(dataset, **common)
    lengths = getattr(dataset, "lengths", None) if group_by_length else None
    sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                               lengths=lengths, batch_size=batch_size)
    if drop_last and sampler.per_rank < batch_size:
        raise ConfigError(f"datasets.{name}: {len(dataset)} samples over {world_size} rank(s) is fewer than one "
                          f"batch of {batch_size}")
    return DataLoader(dataset, sampler=sampler, **common)


def build_dataset(name: str, cfg: Config, seed: Optional[int] = None, section: str = "datasets"):
    """Build the dataset of `cfg.<section>[name]` with its registered builder."""
    import tinygpt.datasets  # noqa: F401  (registers the builders)

    dcfg = getattr(cfg, section)[name]
    # Images are normalised with the statistics of the model's own tower unless the YAML says otherwise.
    dcfg.vis_processor.normalization = dcfg.vis_processor.normalization or image_statistics(cfg.model.vision)
    builder = registry.get("dataset", dcfg.builder or name)
    return builder(dcfg, name=name, seed=cfg.run.seed if seed is None else seed).build()


def build_train_loader(cfg: Config, rank: int = 0, world_size: int = 1,
                       device: torch.device | str = "cpu") -> MultiSourceLoader:
    """Every dataset of `cfg.datasets`, each in its own loader, mixed by `sample_ratio`.

    Workers and pinned memory follow `device` (`worker_settings`) unless run.num_workers is set.
    What the builders skipped while building (missing shards) is counted in the loader's `skips`.
    """
    if not cfg.datasets:
        raise ConfigError(f"{cfg.source}: no datasets configured")
    host = worker_settings(cfg.run.num_workers, device)
    sources = []
    for name, dcfg in cfg.datasets.items():
        dataset = build_dataset(name, cfg)
        batch_size = dcfg.batch_size or cfg.run.batch_size_train
        loader = build_loader(dataset, batch_size, name=name, seed=cfg.run.seed, rank=rank, world_size=world_size,
                              group_by_length=cfg.run.group_by_length, **host)
        sources.append((name, loader, dcfg.sample_ratio))
    mixed = MultiSourceLoader(sources, seed=cfg.run.seed)
    # Builders ran here, in this process, before any batch existed: no batch will carry their records.
    mixed.skips.merge(skips.drain())
    return mixed


def build_valid_loader(cfg: Config, rank: int = 0, world_size: int = 1,
                       device: torch.device | str = "cpu") -> Optional[list[tuple[str, DataLoader]]]:
    """[(name, loader)] over `cfg.valid_datasets`, each read once in order, sharded over ranks, every
    sample kept (no shuffling, no dropped last batch); batches of run.batch_size_eval.  None when the
    config has no valid_datasets."""
    if not cfg.valid_datasets:
        return None
    host = worker_settings(cfg.run.num_workers, device)
    return [(name, build_loader(build_dataset(name, cfg, section="valid_datasets"), cfg.run.batch_size_eval,
                                name=f"valid_datasets.{name}", seed=cfg.run.seed, rank=rank, world_size=world_size,
                                shuffle=False, drop_last=False, **host))
            for name in cfg.valid_datasets]
