"""Caption datasets stored as annotation JSON + image folders.

cc_sbu_align  MiniGPT-4's stage-2 set (TinyGPT-V stage 3): `filter_cap.json`
              {"annotations": [{"image_id", "caption"}]} + `image/<image_id>.jpg`.
coco_caption  LAVIS `coco_karpathy_train.json`: [{"image": "train2014/COCO_...jpg", "caption", "image_id"}].
textcaps      `TextCaps_0.1_train.json`: {"data": [{"image_id", "caption_str", ...}]} + `<image_id>.jpg`.
(laion and cc_sbu webdataset shards: tinygpt/datasets/webdata.py.)
"""
from __future__ import annotations

import os
import random

from tinygpt.common.config import ConfigError
from tinygpt.common.registry import registry
from tinygpt.datasets.base import Builder, DataError, expect_list, first_existing, load_json, require
from tinygpt.datasets.templates import ALIGNMENT, PROMPT_LINE, CAPTION


@registry.register("dataset", "cc_sbu_align")
class CCSBUAlignBuilder(Builder):
    """storage: the cc_sbu_align directory (or its filter_cap.json); image_root: default <dir>/image.

    Sample: {"image", "instruction_input": <alignment prompt>, "answer": <detailed description>}.
    The description is used verbatim (MiniGPT-4 does not run it through the caption cleaner: it is a
    long, cased, punctuated paragraph the model should learn to write).  The prompt is a line of
    MiniGPT-4's alignment.txt (or of prompts_path), drawn once per batch: TinyGPT-V's dataset has no
    instruction and its model draws one from its prompt list for each batch.
    """

    default_prompts = ALIGNMENT
    prompt_slot = False
    instruction_line = PROMPT_LINE
    one_instruction_per_batch = True

    def build(self):
        paths = [os.path.join(p, "filter_cap.json") if os.path.isdir(p) else p for p in self.storage()]
        for path in paths:
            if not os.path.isfile(path):
                raise ConfigError(f"{self.where('storage')}: {path} does not exist")
        root = self.image_root(os.path.join(os.path.dirname(paths[0]), "image"))
        records = []
        for path in paths:
            for i, rec in enumerate(expect_list(load_json(path, self.name), path, "annotations")):
                image_id = require(rec, "image_id", path, i, (str, int))
                records.append((f"{image_id}.jpg", require(rec, "caption", path, i, str)))
        self.root, self.pool = root, self.prompts()
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, [rec[0]])

    def sample(self, rec, rng: random.Random) -> dict:
        return {"image": self.image(self.locate(rec), rng), "instruction_input": rng.choice(self.pool),
                "answer": rec[1]}


class _ShortCaptionBuilder(Builder):
    """Captions answered after a "[caption] ..." instruction; the caption goes through text_processor."""

    default_prompts = CAPTION
    prompt_slot = False

    def sample(self, rec, rng: random.Random) -> dict:
        return {"image": self.image(self.locate(rec), rng), "instruction_input": rng.choice(self.pool),
                "answer": self.text(rec[1])}


@registry.register("dataset", "coco_caption")
class COCOCaptionBuilder(_ShortCaptionBuilder):
    """storage: coco_karpathy_train.json; image_root: the COCO 2014 image folder.

    Only records whose "image" path contains "train" are used, as TinyGPT-V's COCOCaptionDataset
    filters them: Karpathy's train file also lists the val2014 "restval" images, which it leaves out.
    The "image" field is tried as given under image_root, then by its file name alone (so both
    a coco/ root holding train2014/ and the train2014/ folder itself work).
    """

    def build(self):
        self.root = self.image_root()
        records, left_out = [], 0
        for path, i, rec in self.json_records():
            image = require(rec, "image", path, i, str)
            if "train" in image:
                records.append((image, require(rec, "caption", path, i, str)))
            else:
                left_out += 1
        if left_out and not records:
            raise DataError(f"{self.where('storage')}: none of the {left_out} records has 'train' in its \"image\" "
                            "path, and coco_caption trains only on those (TinyGPT-V's rule)")
        self.pool = self.prompts()
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, [rec[0], os.path.basename(rec[0])])


@registry.register("dataset", "textcaps")
@registry.register("dataset", "textcaps_caption")  # TinyGPT-V's YAML key
class TextCapsBuilder(_ShortCaptionBuilder):
    """storage: TextCaps_0.1_train.json; image_root: the TextCaps train_images folder."""

    def build(self):
        self.root = self.image_root()
        records = []
        for path, i, rec in self.json_records("data"):
            image_id = require(rec, "image_id", path, i, (str, int))
            alt = rec.get("image_path") or ""
            records.append(((f"{image_id}.jpg", os.path.basename(alt)),
                            require(rec, "caption_str", path, i, str)))
        self.pool = self.prompts()
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, rec[0])
