"""Data published the Hugging Face way, read with the `datasets` library (extra `data`):

imagefolder  storage: [a folder] holding the images and `metadata.jsonl` or `metadata.csv` with
             `file_name` (the image, relative to the metadata file) and the text columns below.
parquet      storage: .parquet files (globs allowed), images as `{"bytes", "path"}` cells (the
             `datasets` Image feature) or raw bytes.
arrow        storage: .arrow files, or a folder written by `Dataset.save_to_disk`.

The text columns decide the sample, each one an existing builder's (the same record -> sample
path, only the image comes from the row instead of a file):
    question + answer (str or list)  -> coco_vqa's    ("[vqa] {}" pool, or prompts_path)
    conversations (LLaVA turns)      -> llava_mix's   (multi-turn; a JSON string in a CSV is parsed)
    caption or text                  -> coco_caption's ("[caption] ..." pool)
`split` picks the split (default train).  Rows stay in the library's memory-mapped Arrow files
(parquet and imagefolder are converted once into the library's cache, HF_DATASETS_CACHE) and are
read when the epoch reaches them; a row whose image does not decode or whose text is missing is
skipped and counted (file, row, reason), never the end of a run.
"""
from __future__ import annotations

import glob
import io
import json
import os
import random

from PIL import Image

from tinygpt.common.config import ConfigError
from tinygpt.common.registry import registry
from tinygpt.datasets.base import BadRecord, Builder, DataError, ImageUnreadable, RecordDataset, _text_chars
from tinygpt.datasets.captions import _ShortCaptionBuilder
from tinygpt.datasets.conversation import _LlavaBuilder
from tinygpt.datasets.jsonl_vqa import vqa_fields
from tinygpt.datasets.llava_mix import checked_turns
from tinygpt.datasets.vqa import _VQABuilder

IMAGE_COLUMN = "image"
# The text columns that decide the sample's shape, first match wins.
COLUMNS = (("conversations",), ("question", "answer"), ("caption",), ("text",))


def decode(cell) -> Image.Image:
    """An image cell ({"bytes", "path"} with decode off, raw bytes, a path, or a PIL image) -> RGB."""
    if isinstance(cell, Image.Image):
        return cell.convert("RGB")
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if isinstance(cell, str):
        if not os.path.isfile(cell):
            raise ImageUnreadable("missing image", cell)
        with open(cell, "rb") as f:
            cell = f.read()
    if not isinstance(cell, (bytes, bytearray)):
        raise ImageUnreadable("missing image", "the row's image cell is empty")
    try:
        with Image.open(io.BytesIO(cell)) as im:
            im.load()
            return im.convert("RGB")
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise ImageUnreadable("unreadable image", f"{type(exc).__name__}: {exc}") from None


class _RowImage:
    """Mixed into an existing builder: its record's image is the row's cell, not a file name.
    `from_row` makes that builder's record from a row; its own `sample` does the rest."""

    def locate(self, rec):
        return rec[0]

    def image(self, cell, rng: random.Random):
        return self.vis(decode(cell), rng)


class _RowVQA(_RowImage, _VQABuilder):
    def from_row(self, row: dict, cell, path: str, where: str):
        return (cell, *vqa_fields(row, path, where))


class _RowConversation(_RowImage, _LlavaBuilder):
    multi_turn = True

    def from_row(self, row: dict, cell, path: str, where: str):
        turns = row.get("conversations")
        if isinstance(turns, str):  # a CSV cell holds the turns as JSON text
            try:
                turns = json.loads(turns)
            except ValueError:
                raise BadRecord(f"{path}: record {where} field 'conversations' is not JSON") from None
        return cell, checked_turns({"conversations": turns}, path, where)


class _RowCaption(_RowImage, _ShortCaptionBuilder):
    column = "caption"

    def from_row(self, row: dict, cell, path: str, where: str):
        caption = row.get(self.column)
        if not isinstance(caption, str) or not caption.strip():
            raise BadRecord(f"{path}: record {where} field {self.column!r} is {caption!r}, expected a caption")
        return cell, caption


class _RowText(_RowCaption):
    column = "text"


SHAPES = {"conversations": _RowConversation, "question": _RowVQA, "caption": _RowCaption, "text": _RowText}


class HFDataset(RecordDataset):
    """RecordDataset whose records are row numbers of a `datasets.Dataset` (`make_sample` reads
    the row); the length proxy for bucketing reads the text columns only, not every image."""

    def __init__(self, name, table, make_sample, seed, text_columns):
        super().__init__(name, range(len(table)), make_sample, seed)
        self.table, self.text_columns = table, text_columns

    @property
    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = [_text_chars(row) for row in self.table.select_columns(self.text_columns)]
        return self._lengths


class _HFBuilder(Builder):
    kind = ""  # the `datasets` packaged builder

    def build(self):
        table = self.load()
        columns = set(table.column_names)
        if IMAGE_COLUMN not in columns:
            raise ConfigError(f"{self.where('storage')}: {self.cfg.storage[0]} has no {IMAGE_COLUMN!r} column "
                              f"(columns: {', '.join(sorted(columns))})")
        text = next((shape for shape in COLUMNS if set(shape) <= columns), None)
        if text is None:
            raise ConfigError(f"{self.where('storage')}: {self.cfg.storage[0]} needs 'question' + 'answer', "
                              f"'conversations', 'caption' or 'text' columns; it has {', '.join(sorted(columns))}")
        self.table, self.text_columns = table, list(text)
        self.shape = SHAPES[text[0]](self.cfg, self.name, self.seed)
        self.shape.pool = self.shape.prompts()
        _ = self.shape.vis, self.shape.text  # a bad processor config fails now, not in a worker
        if not len(table):
            raise DataError(f"datasets.{self.name}: {', '.join(self.cfg.storage)} holds no row (split {self.cfg.split!r})")
        return HFDataset(self.name, table, self.sample, self.seed, self.text_columns)

    def load(self):
        """The rows as a `datasets.Dataset`, image cells left undecoded (decoded per sample, so a
        corrupt one is a skip)."""
        try:
            import datasets
        except ImportError:
            raise ConfigError(f"{self.where('builder')}: {self.kind} needs the `datasets` library: "
                              f"pip install -e '.[data]'") from None
        table = self.read(datasets)
        if isinstance(table.features.get(IMAGE_COLUMN), datasets.Image):
            table = table.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
        return table

    def read(self, datasets):
        files = self.files()
        try:
            return datasets.load_dataset(self.kind, data_files=files, split=self.cfg.split)
        except ValueError as exc:  # an unknown split, files that disagree on their columns
            raise DataError(f"datasets.{self.name}: {exc}") from None

    def files(self) -> list[str]:
        out = []
        for pattern in self.cfg.storage:
            found = sorted(glob.glob(pattern)) or ([pattern] if os.path.exists(pattern) else [])
            if not found:
                raise ConfigError(f"{self.where('storage')}: {pattern} matches no file")
            out += found
        return out

    def sample(self, index: int, rng: random.Random) -> dict:
        row, path = self.table[index], self.cfg.storage[0]
        cell = row[IMAGE_COLUMN]
        if cell is None:
            raise ImageUnreadable("missing image", f"{path}: row {index} has no image")
        try:
            return self.shape.sample(self.shape.from_row(row, cell, path, f"row {index}"), rng)
        except ImageUnreadable as exc:
            if exc.kind == "malformed record":
                raise
            raise ImageUnreadable(exc.kind, f"{path}: row {index}: {exc.detail}") from None


@registry.register("dataset", "imagefolder")
class ImageFolderBuilder(_HFBuilder):
    """storage: [the folder with metadata.jsonl / metadata.csv and the images]."""

    kind = "imagefolder"

    def read(self, datasets):
        folder = self.storage("dir")[0]
        try:
            return datasets.load_dataset("imagefolder", data_dir=folder, split=self.cfg.split)
        except ValueError as exc:
            raise DataError(f"datasets.{self.name}: {folder}: {exc}") from None


@registry.register("dataset", "parquet")
class ParquetBuilder(_HFBuilder):
    """storage: .parquet files (globs allowed)."""

    kind = "parquet"


@registry.register("dataset", "arrow")
class ArrowBuilder(_HFBuilder):
    """storage: .arrow files (globs allowed), or one folder written by `Dataset.save_to_disk`."""

    kind = "arrow"

    def read(self, datasets):
        if len(self.cfg.storage) == 1 and os.path.isdir(self.cfg.storage[0]):
            table = datasets.load_from_disk(self.cfg.storage[0])
            return table[self.cfg.split] if isinstance(table, datasets.DatasetDict) else table
        return super().read(datasets)
