"""laion and cc_sbu: webdataset tar shards of (jpg, json{"caption"} or txt) pairs, streamed.

This is the layout img2dataset writes and MiniGPT-4/TinyGPT-V stages 1-2 read
(`.../cc_sbu_dataset/{00000..01255}.tar`).  The stream is an IterableDataset that
  * splits shards over (rank, worker) -- or samples, when there are fewer shards than readers;
  * reshuffles shard order and a sample buffer every epoch from (seed, epoch), so a run is repeatable;
  * skips and counts a corrupt/missing shard, an undecodable image, or a sample without caption;
  * passes a json's optional "cells" (per-grid-cell class ids, the synthetic shards) on as
    `cell_labels`, for the Q-Former cell loss (QFormerConfig.cell_classes);
  * can fast-forward to a data position without decoding images (resume; see `skip_batches`).
"""
from __future__ import annotations

import glob
import io
import json
import math
import os
import random
import re
from typing import Callable, Iterator, Optional

import braceexpand
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from tinygpt.common.config import ConfigError
from tinygpt.common.registry import registry
from tinygpt.datasets import skips
from tinygpt.datasets.base import Builder, ImageUnreadable


IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_STREAM_NAME = re.compile(r"name='([^']*)'")


def expand_shards(patterns: list[str], where: str) -> tuple[list[str], list[str]]:
    """Storage entries -> (existing shard paths, missing ones).

    An entry is a directory (its *.tar), a glob, a brace range (`{00000..01255}.tar`) or a file.
    A file named explicitly must exist (ConfigError naming `where`); shards missing from a brace range
    are returned as missing (img2dataset leaves gaps where a download failed) and skipped.
    """
    found: list[str] = []
    missing: list[str] = []
    for entry in patterns:
        entry = os.fspath(entry)
        if os.path.isdir(entry):
            shards = sorted(glob.glob(os.path.join(entry, "*.tar")))
            if not shards:
                raise ConfigError(f"{where}: directory {entry} holds no .tar shard")
            found += shards
        elif any(c in entry for c in "*?["):
            shards = sorted(glob.glob(entry))
            if not shards:
                raise ConfigError(f"{where}: no shard matches {entry}")
            found += shards
        elif "{" in entry and ".." in entry:
            for path in braceexpand.braceexpand(entry):
                (found if os.path.isfile(path) else missing).append(path)
        elif os.path.isfile(entry):
            found.append(entry)
        else:
            raise ConfigError(f"{where}: shard {entry} does not exist")
    if not found:
        raise ConfigError(f"{where}: none of the shards exists (e.g. {missing[0] if missing else patterns})")
    return found, missing


def _buffer_shuffle(items, size: int, rng: random.Random):
    """Approximate shuffle with a bounded buffer (tar shards are read sequentially)."""
    if size <= 1:
        yield from items
        return
    buf = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


class ShardStream(IterableDataset):
    """Iterates raw webdataset samples of `shards` and turns each into a sample dict with `to_sample`
    (which may raise ImageUnreadable, or return None for a sample to skip)."""

    def __init__(self, name: str, shards: list[str], to_sample: Callable[[dict, random.Random], Optional[dict]],
                 seed: int = 0, shuffle_buffer: int = 1000):
        self.name = name
        self.shards = list(shards)
        self.to_sample = to_sample
        self.seed = int(seed)
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._skip: Optional[tuple[int, int, int]] = None  # (batches, batch_size, num_workers)
        # The DataLoader's batch size (build_loader sets it): a pass that leaves skip records no batch
        # carried (every sample after the last full batch, or every sample, unreadable) ends with one
        # batch of None, so that collate ships them -- from a worker process they would be lost.
        self.batch_size: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_distributed(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def skip_batches(self, batches: int, batch_size: int, num_workers: int) -> None:
        """Make the next pass start `batches` batches into the epoch, reading but not decoding what it
        skips.  DataLoader hands batch k to worker k % num_workers, so each worker skips its share.
        (A sample skipped as corrupt before the checkpoint shifts the position by one sample.)"""
        self._skip = (int(batches), int(batch_size), max(1, int(num_workers))) if batches > 0 else None

    def _handler(self, seen: set):
        """webdataset error handler: count a bad shard once (tarfile may fail twice on one truncation)
        and go on with the next shard."""

        def handle(exn: Exception) -> bool:
            args = [a for a in exn.args if isinstance(a, str)]
            url = next((a for a in reversed(args) if " @ " not in a), None)
            if url is None:  # raised inside a member: "<message> @ <_io.BufferedReader name='<url>'>"
                m = _STREAM_NAME.search(" ".join(args))
                url = m.group(1) if m else "?"
            if url not in seen:
                seen.add(url)
                reason = args[0].split(" @ ")[0] if args else ""
                skips.record(self.name, "corrupt or unreadable shard", f"{url} ({type(exn).__name__}: {reason})")
            return True

        return handle

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = 0
        if self._skip is not None:
            batches, batch_size, loader_workers = self._skip
            mine = math.ceil(max(0, batches - wid) / loader_workers)
            skip = mine * batch_size
        self._skip = None  # consumed now, in whichever process iterates
        return self._samples(self.rank * nworkers + wid, self.world_size * nworkers, skip)

    def _samples(self, reader: int, readers: int, skip: int) -> Iterator[dict]:
        order = list(self.shards)
        random.Random(f"{self.name}:{self.seed}:{self.epoch}").shuffle(order)
        by_sample = len(order) < readers  # too few shards to give every reader its own
        mine = order if by_sample else order[reader::readers]
        raw = tarfile_samples(({"url": url} for url in mine), handler=self._handler(set()))
        if by_sample:
            raw = (s for j, s in enumerate(raw) if j % readers == reader)
        rng = random.Random(f"{self.name}:{self.seed}:{self.epoch}:{reader}")
        for n, raw_sample in enumerate(_buffer_shuffle(raw, self.shuffle_buffer, rng)):
            if n < skip:
                continue
            key = f"{raw_sample.get('__url__')}:{raw_sample.get('__key__')}"
            try:
                sample = self.to_sample(raw_sample, random.Random(f"{self.name}:{self.seed}:{self.epoch}:{key}"))
            except ImageUnreadable as exc:
                skips.record(self.name, exc.kind, exc.detail)
                continue
            if sample is not None:
                yield sample
        if self.batch_size and skips.pending():
            yield from [None] * self.batch_size


@registry.register("dataset", "laion")
@registry.register("dataset", "cc_sbu")
class CaptionShardBuilder(Builder):
    """storage: shard files / globs / brace ranges / directories of .tar.

    Sample: {"image", "answer": text_processor(caption)} plus "instruction_input" (a line of
    prompts_path drawn per sample, wrapped as TinyGPT-V's caption datasets wrap their instructions)
    when prompts_path is set; without it stages 1-2 train plain image->caption, as TinyGPT-V's.
    """

    prompt_slot = False
    shuffle_buffer = 1000

    def build(self) -> ShardStream:
        if not self.cfg.storage:
            raise ConfigError(f"{self.where('storage')} is empty: list the shard files")
        shards, missing = expand_shards(list(self.cfg.storage), self.where("storage"))
        for path in missing:
            skips.record(self.name, "missing shard", path)
        self.pool = self.prompts() if self.cfg.prompts_path else []
        _ = self.vis, self.text  # build processors now: a bad processor config fails at start-up
        return ShardStream(self.name, shards, self.sample, self.seed, self.shuffle_buffer)

    def sample(self, raw: dict, rng: random.Random) -> Optional[dict]:
        where = f"{raw.get('__url__')}:{raw.get('__key__')}"
        caption, cells = None, None
        if "json" in raw:
            try:
                meta = json.loads(raw["json"])
                caption = meta.get("caption") if isinstance(meta, dict) else None
                cells = meta.get("cells") if isinstance(meta, dict) else None
            except (ValueError, UnicodeDecodeError):
                caption = None
        if caption is None and "txt" in raw:
            caption = raw["txt"].decode("utf-8", errors="replace")
        if not isinstance(caption, str) or not caption.strip():
            skips.record(self.name, "sample without caption", where)
            return None
        data = next((raw[k] for k in IMAGE_KEYS if k in raw), None)
        if data is None:
            raise ImageUnreadable("sample without image", where)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                image = im.convert("RGB")
        except Exception as exc:  # any decode failure of one image is a skip, not a crash
            raise ImageUnreadable("unreadable image", f"{where} ({type(exc).__name__}: {exc})") from None
        if cells is not None and not (isinstance(cells, list) and cells
                                      and all(type(c) is int and c >= 0 for c in cells)):
            skips.record(self.name, "'cells' is not a list of class ids", where)
            return None
        out = {"image": self.vis(image, rng), "answer": self.text(caption)}
        if cells is not None:  # per-cell content classes (synthetic shards): the Q-Former cell loss
            out["cell_labels"] = torch.tensor(cells)
        if self.pool:
            out["instruction_input"] = rng.choice(self.pool)
        return out
