"""What every dataset builder shares: checked paths, processors, prompt pools, robust image loading,
and the map-style dataset that serves one sample per annotation record.

Contract of every builder: `Builder(cfg: DatasetConfig, name=None, seed=0).build()` returns a torch
Dataset (or IterableDataset) whose items are TinyGPT-V sample dicts:
    {"image": FloatTensor [3, S, S], "answer": str, "instruction_input": str (optional)}
Text-only samples (unnatural_instruction) have no "image"; multi-turn samples join their turns with
protocol.CONNECT_SYM and carry "connect_sym" (see tinygpt/datasets/conversation.py).
"""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from tinygpt.common.config import ConfigError, DatasetConfig
from tinygpt.common.errors import UserError
from tinygpt.common.jsonfile import read_json
from tinygpt.common.numbers import number_problem, shown
from tinygpt.datasets import skips
from tinygpt.datasets.templates import INSTRUCTION, load_prompts, wrap
from tinygpt.processors import build_processor

# After this many unreadable images in a row the problem is the configuration, not a bad file.
PROBE = 20  # records whose images are looked for at build time


class DataError(UserError):
    """An annotation file is malformed; the message names the file, the record and the field."""


class ImageUnreadable(Exception):
    """An image is missing or cannot be decoded; the dataset skips the record and counts it."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class BadRecord(ImageUnreadable):
    """A record that cannot become a sample (not JSON, a field missing or of the wrong type): the
    formats read lazily (jsonl_vqa.py, llava_mix.py, hf_formats.py) find it only when the epoch reaches it, so it is
    skipped and counted like an unreadable image instead of ending the run."""

    def __init__(self, detail: str):
        super().__init__("malformed record", detail)


def open_image(path: str) -> Image.Image:
    """Decode fully now (a truncated file fails here, where it can be skipped) and convert to RGB."""
    if not os.path.isfile(path):
        raise ImageUnreadable("missing image", path)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise ImageUnreadable("unreadable image", f"{path} ({type(exc).__name__}: {exc})") from None


def first_existing(root: str, candidates: Iterable[str]) -> str:
    """The first of `root/candidate` that exists; ImageUnreadable("missing image") otherwise."""
    tried = []
    for name in candidates:
        if not name:
            continue
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
        tried.append(path)
    raise ImageUnreadable("missing image", " or ".join(tried) or f"(no file name under {root})")


def load_json(path: str, dataset: str) -> Any:
    try:
        return read_json(path, DataError)
    except DataError as exc:
        raise DataError(f"datasets.{dataset}: {exc}") from None


def require(record: Any, field: str, path: str, index: Any, types: type | tuple = object) -> Any:
    """`record[field]` type-checked; errors name the file, the record and the field.  Where a number
    is expected, a boolean, NaN or infinity is refused too (common/numbers.py)."""
    if not isinstance(record, dict):
        raise DataError(f"{path}: record {index} is {type(record).__name__}, expected an object")
    if field not in record:
        raise DataError(f"{path}: record {index} has no {field!r} field")
    value = record[field]
    numeric = {int, float} & set(types if isinstance(types, tuple) else (types,))
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        want = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise DataError(f"{path}: record {index} field {field!r} is {type(value).__name__}, expected {want}")
    problem = numeric and isinstance(value, (int, float)) and number_problem(value)
    if problem:
        raise DataError(f"{path}: record {index} field {field!r} is {shown(value)}; {problem}")
    return value


def expect_list(obj: Any, path: str, key: Optional[str] = None) -> list:
    """`obj` (or `obj[key]`) as a list, or a DataError naming the file."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise DataError(f"{path}: expected a JSON object with a {key!r} list")
        obj = obj[key]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list{f' under {key!r}' if key else ''}, got {type(obj).__name__}")
    return obj


class Builder:
    """Base of the registered builders.  Subclasses implement `build()`; the helpers check every path
    the YAML gave and fail at start-up with `datasets.<name>.<key>` and the path in the message."""

    default_prompts: Sequence[str] = ()  # used when prompts_path is unset
    prompt_slot = True  # the templates take the question / phrase / box in "{}"
    needs_whole_image = False  # boxes in the text: a cropping image processor would corrupt them
    uses_images = True
    instruction_line = INSTRUCTION  # how a template without the image slot is wrapped around it
    # True: one instruction for the whole batch (TinyGPT-V draws a model-level prompt once per batch)
    one_instruction_per_batch = False

    def __init__(self, cfg: DatasetConfig, name: Optional[str] = None, seed: int = 0):
        self.cfg = cfg
        self.name = name or cfg.builder or type(self).__name__
        self.seed = int(seed)
        self._vis = None
        self._text = None

    # ------------------------------------------------------------------ configuration checks
    def where(self, key: str) -> str:
        return f"datasets.{self.name}.{key}"

    def storage(self, expect: str = "any") -> list[str]:
        """`cfg.storage`, every entry checked to exist (`expect`: "file", "dir" or "any")."""
        if not self.cfg.storage:
            raise ConfigError(f"{self.where('storage')} is empty: list the annotation file(s) or shard(s)")
        out = []
        for path in self.cfg.storage:
            path = os.fspath(path)
            ok = {"file": os.path.isfile, "dir": os.path.isdir, "any": os.path.exists}[expect](path)
            if not ok:
                what = {"file": "file", "dir": "directory", "any": "path"}[expect]
                raise ConfigError(f"{self.where('storage')}: {what} {path} does not exist")
            out.append(path)
        return out

    def json_records(self, key: Optional[str] = None) -> Iterator[tuple[str, int, Any]]:
        """(file, index, record) of every record of every JSON file under `storage` (a top-level
        list, or the list under `key`), each file checked to hold one (errors name file and key)."""
        for path in self.storage("file"):
            for i, rec in enumerate(expect_list(load_json(path, self.name), path, key)):
                yield path, i, rec

    def image_root(self, default: Optional[str] = None) -> str:
        root = self.cfg.image_root or default
        if not root:
            raise ConfigError(f"{self.where('image_root')} is not set (the directory holding the images)")
        if not os.path.isdir(root):
            raise ConfigError(f"{self.where('image_root')}: directory {root} does not exist")
        return root

    @property
    def vis(self):
        if self._vis is None:
            self._vis = self._processor("vis_processor")
            if self.needs_whole_image and not getattr(self._vis, "keeps_whole_image", False):
                raise ConfigError(
                    f"{self.where('vis_processor')}: {self.cfg.vis_processor.name} with min_scale="
                    f"{self.cfg.vis_processor.min_scale} crops images, which moves the boxes this dataset "
                    f"puts in its text; use blip2_image_train (resize only, TinyGPT-V's) or min_scale: 1.0")
        return self._vis

    @property
    def text(self):
        if self._text is None:
            self._text = self._processor("text_processor")
        return self._text

    def _processor(self, key: str):
        try:
            return build_processor(getattr(self.cfg, key))
        except ValueError as exc:  # the processor's own check of its settings (e.g. min_scale > max_scale)
            raise ConfigError(f"{self.where(key)}: {exc}") from None

    def prompts(self) -> list[str]:
        """The instruction pool: the prompts_path file if given, else the builder's default."""
        if self.cfg.prompts_path:
            try:
                pool = load_prompts(self.cfg.prompts_path, self.name, self.prompt_slot)
            except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8, no prompt, a bad line
                raise ConfigError(f"{exc}" if str(exc).startswith("datasets.") else
                                  f"{self.where('prompts_path')}: {self.cfg.prompts_path}: {exc}") from None
        else:
            pool = list(self.default_prompts)
        return [wrap(p, self.instruction_line) for p in pool]

    # ------------------------------------------------------------------ samples
    def image(self, path: str, rng: random.Random) -> torch.Tensor:
        return self.vis(open_image(path), rng)

    def probe_images(self, records: Sequence, locate: Callable[[Any], str]) -> None:
        """Fail at build time when none of the first records' images exists: the image_root is wrong.

        (One missing image is a skip; twenty out of twenty is a configuration error.)
        """
        sample = records[:PROBE]
        misses = []
        for rec in sample:
            try:
                locate(rec)
                return
            except ImageUnreadable as exc:
                misses.append(exc.detail)
        if sample:
            raise ConfigError(f"{self.where('image_root')}: none of the first {len(sample)} images exists "
                              f"(e.g. {misses[0]}); is image_root right?")

    def probe_parsed(self, raw: Sequence, parse: Callable[[Any], Any], locate: Callable[[Any], str]) -> None:
        """probe_images for the formats parsed lazily: over the first records that parse (the
        malformed ones are the epoch's to skip and count); none parsing is a wrong format."""
        good, first_error = [], None
        for rec in raw[:5 * PROBE]:
            try:
                good.append(parse(rec))
            except BadRecord as exc:
                first_error = first_error or exc.detail
                continue
            if len(good) == PROBE:
                break
        if raw and not good:
            raise DataError(f"datasets.{self.name}: none of the first {min(len(raw), 5 * PROBE)} records is "
                            f"usable, e.g. {first_error}")
        self.probe_images(good, locate)

    def dataset(self, records: Sequence, make_sample: Callable[[Any, random.Random], dict]) -> "RecordDataset":
        if not records:
            raise DataError(f"datasets.{self.name}: the annotation files hold no usable record "
                            f"(split {self.cfg.split!r}): {', '.join(self.cfg.storage)}")
        # Build the processors now, so a bad processor config fails at start-up, not in a worker.
        _ = (self.vis, self.text) if self.uses_images else self.text
        per_batch = self.cfg.one_instruction_per_batch
        return RecordDataset(self.name, records, make_sample, self.seed,
                             self.one_instruction_per_batch if per_batch is None else per_batch)

    def build(self):  # pragma: no cover - every registered builder overrides it
        raise NotImplementedError


class RecordDataset(Dataset):
    """One sample per annotation record.  A record whose image is unreadable gives None: it is
    counted once in `skips` each time the epoch reaches it and `collate` leaves it out of its batch
    (no other sample is served twice in its place); randomness (template choice, crop, answer pick) comes from a per-sample generator seeded
    by (name, seed, epoch, index), so a sample is the same whichever worker or resume produces it.
    `one_instruction_per_batch` asks the loader's collate to give the whole batch the instruction
    its first sample drew (a uniform draw per batch, as TinyGPT-V's model-level prompt list)."""

    def __init__(self, name: str, records: Sequence, make_sample: Callable[[Any, random.Random], dict], seed: int = 0,
                 one_instruction_per_batch: bool = False):
        self.name = name
        self.one_instruction_per_batch = one_instruction_per_batch
        self.records = records
        self.make_sample = make_sample
        self.seed = seed
        self.epoch = 0
        self._lengths: Optional[list[int]] = None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def lengths(self) -> list[int]:
        """A text-length proxy per record for length bucketing: the characters of every string in it.

        Records differ per builder (tuples, dicts, lists of turns), and an image file name adds a
        near-constant offset, so counting all strings ranks records by text length without opening
        an image or tokenizing; the sampler only compares them.
        """
        if self._lengths is None:
            self._lengths = [_text_chars(rec) for rec in self.records]
        return self._lengths

    def rng(self, index: int) -> random.Random:
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes and runs.
        return random.Random(f"{self.name}:{self.seed}:{self.epoch}:{index}")

    def __getitem__(self, index: int) -> Optional[dict]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} records")
        index %= n
        try:
            return self.make_sample(self.records[index], self.rng(index))
        except ImageUnreadable as exc:
            skips.record(self.name, exc.kind, exc.detail)
            return None


def _text_chars(obj: Any) -> int:
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(_text_chars(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_text_chars(v) for v in obj)
    return 0
