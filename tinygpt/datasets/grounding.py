"""Grounding data: boxes in the answer (refer) or in the instruction (identify).

Boxes are `{<x1><y1><x2><y2>}` on the 100-step grid of the *original* image, written with TinyGPT-V's
formula (tinygpt/conversation/boxes.py `box_from_pixels`: unclamped unless `clamp_boxes`), so these
builders refuse an image processor that crops (see Builder.needs_whole_image).  Instructions are
wrapped as every TinyGPT-V dataset wraps them (`templates.INSTRUCTION`, trailing space included).

refcoco / refcocop / refcocog        "[refer] give me the location of {phrase}" -> box
invrefcoco / invrefcocop / invrefcocog  "[identify] what is it in {box}" -> phrase
    storage: the JSON dataset/convert_refcoco.py writes from `refs(unc).p` + `instances.json`
    ({"refs": [{"image_id", "file_name", "split", "bbox": [x, y, w, h], "sentences": [...]}]});
    only refs whose "split" equals the dataset's `split` are used.  image_root: COCO train2014.
refvg   Visual Genome `region_descriptions.json` + `image_data.json` (storage: their directory, or
        the two files); regions smaller than 16384 px^2 only (OFA's choice, kept by MiniGPT-v2).
flickr_grounded_caption / flickr_caption_to_phrase / flickr_object_to_phrase
        MiniGPT-v2's filtered Flickr30k Entities: groundedcaption.json, captiontobbox.json,
        phrasetobbox.json (boxes already on the grid); image_root: flickr30k-images (<image_id>.jpg).
"""
from __future__ import annotations

import os
import random
from typing import Sequence

import numpy as np

from tinygpt.common.config import ConfigError
from tinygpt.common.registry import registry
from tinygpt.datasets.base import (
    Builder,
    DataError,
    expect_list,
    first_existing,
    load_json,
    open_image,
    require,
)
from tinygpt.conversation.boxes import box_from_pixels, phrase
from tinygpt.datasets.templates import DETECTION, GROUNDED_CAPTION, IDENTIFY, REFER


class _BoxBuilder(Builder):
    needs_whole_image = True
    identify = False  # False: phrase -> box (refer); True: box -> phrase (identify)

    @property
    def default_prompts(self):
        return IDENTIFY if self.identify else REFER

    def box_sample(self, path: str, bbox_xywh, name: str, rng: random.Random) -> dict:
        image = open_image(path)
        box = box_from_pixels(bbox_xywh, image.width, image.height, clamp=self.cfg.clamp_boxes)
        name = self.text(name)
        template = rng.choice(self.pool)
        return {"image": self.vis(image, rng),
                "instruction_input": template.format(box if self.identify else name),
                "answer": name if self.identify else box}


def _check_bbox(value, path: str, index) -> list[float]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, (int, float)) for v in value) or value[2] <= 0 or value[3] <= 0):
        raise DataError(f"{path}: record {index} field 'bbox' must be [x, y, w, h] with w, h > 0, got {value!r}")
    return value


class _RefCOCOBuilder(_BoxBuilder):
    def build(self):
        self.root = self.image_root()
        self.pool = self.prompts()
        records = []
        for path, i, ref in self.json_records("refs"):
            split = require(ref, "split", path, i, str)
            if split != self.cfg.split:
                continue
            image_id = require(ref, "image_id", path, i, int)
            sentences = require(ref, "sentences", path, i, list)
            if not sentences or not all(isinstance(s, str) for s in sentences):
                raise DataError(f"{path}: record {i} field 'sentences' must be a non-empty list of strings")
            names = (ref.get("file_name") or "", f"COCO_train2014_{image_id:012d}.jpg")
            records.append((names, _check_bbox(ref.get("bbox"), path, i), sentences))
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, rec[0])

    def sample(self, rec, rng: random.Random) -> dict:
        return self.box_sample(self.locate(rec), rec[1], rng.choice(rec[2]), rng)


@registry.register("dataset", "refcoco")
@registry.register("dataset", "refcocop")
@registry.register("dataset", "refcocog")
class RefCOCOBuilder(_RefCOCOBuilder):
    """RefCOCO/RefCOCO+/RefCOCOg referring: phrase -> box (the three differ only in their files)."""


@registry.register("dataset", "invrefcoco")
@registry.register("dataset", "invrefcocop")
@registry.register("dataset", "invrefcocog")
class InvRefCOCOBuilder(_RefCOCOBuilder):
    """RefCOCO/RefCOCO+/RefCOCOg identification: box -> phrase."""

    identify = True


class _Regions(Sequence):
    """Visual Genome regions as flat arrays: millions of dicts would cost gigabytes per worker."""

    def __init__(self, files: list[str], image_of: np.ndarray, boxes: np.ndarray, phrases: list[str]):
        self.files, self.image_of, self.boxes, self.phrases = files, image_of, boxes, phrases

    def __len__(self) -> int:
        return len(self.phrases)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.files[self.image_of[i]], self.boxes[i].tolist(), self.phrases[i]


@registry.register("dataset", "refvg")
class RefVGBuilder(_BoxBuilder):
    """storage: the Visual Genome directory (or region_descriptions.json and image_data.json);
    image_root: default that directory (holding VG_100K/ and VG_100K_2/)."""

    max_area = 16384

    def _files(self) -> tuple[str, str]:
        paths = self.storage()
        if len(paths) == 1 and os.path.isdir(paths[0]):
            paths = [os.path.join(paths[0], "region_descriptions.json"), os.path.join(paths[0], "image_data.json")]
        by_name = {os.path.basename(p): p for p in paths}
        out = []
        for name in ("region_descriptions.json", "image_data.json"):
            if name not in by_name or not os.path.isfile(by_name[name]):
                raise ConfigError(f"{self.where('storage')}: {name} not found in {paths}")
            out.append(by_name[name])
        return out[0], out[1]

    def build(self):
        regions_path, images_path = self._files()
        self.root = self.image_root(os.path.dirname(regions_path))
        self.pool = self.prompts()
        files: dict[int, str] = {}
        for i, img in enumerate(expect_list(load_json(images_path, self.name), images_path)):
            image_id = img.get("image_id", img.get("id")) if isinstance(img, dict) else None
            if not isinstance(image_id, int):
                raise DataError(f"{images_path}: record {i} has no integer 'image_id' (or 'id')")
            url = img.get("url") or ""
            files[image_id] = "/".join(url.split("/")[-2:]) if url else f"VG_100K/{image_id}.jpg"
        names, index = [], {}
        image_of, boxes, phrases = [], [], []
        for i, entry in enumerate(expect_list(load_json(regions_path, self.name), regions_path)):
            for j, reg in enumerate(require(entry, "regions", regions_path, i, list)):
                where = f"{i}.regions[{j}]"
                w, h = require(reg, "width", regions_path, where, (int, float)), require(reg, "height", regions_path, where, (int, float))
                if w * h >= self.max_area:  # the original's only filter (a zero-width region stays)
                    continue
                image_id = require(reg, "image_id", regions_path, where, int)
                if image_id not in files:
                    raise DataError(f"{regions_path}: record {where} image_id {image_id} is not in {images_path}")
                if image_id not in index:
                    index[image_id] = len(names)
                    names.append(files[image_id])
                image_of.append(index[image_id])
                boxes.append((require(reg, "x", regions_path, where, (int, float)),
                              require(reg, "y", regions_path, where, (int, float)), w, h))
                phrases.append(require(reg, "phrase", regions_path, where, str))
        # float64: float32 would round fractional corners and can move int(100 * x / W) a cell.
        records = _Regions(names, np.asarray(image_of, dtype=np.int32),
                           np.asarray(boxes, dtype=np.float64).reshape(-1, 4), phrases)
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        name = rec[0]
        return first_existing(self.root, [name, f"VG_100K/{os.path.basename(name)}", f"VG_100K_2/{os.path.basename(name)}"])

    def sample(self, rec, rng: random.Random) -> dict:
        return self.box_sample(self.locate(rec), rec[1], rec[2], rng)


class _FlickrBuilder(Builder):
    """One of MiniGPT-v2's three Flickr30k Entities files; answers are used verbatim."""

    needs_whole_image = True
    fields: tuple[str, ...] = ()

    def build(self):
        self.root = self.image_root()
        self.pool = self.prompts()
        records = []
        for path, i, rec in self.json_records():
            image_id = require(rec, "image_id", path, i, (str, int))
            records.append((f"{image_id}.jpg",) + tuple(require(rec, f, path, i, str) for f in self.fields))
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, [rec[0]])


@registry.register("dataset", "flickr_grounded_caption")
class FlickrGroundedCaptionBuilder(_FlickrBuilder):
    """groundedcaption.json [{"image_id", "grounded_caption"}]: "[grounding] describe ..." -> caption
    with <p>phrase</p>{box} spans."""

    default_prompts = GROUNDED_CAPTION
    prompt_slot = False
    fields = ("grounded_caption",)

    def sample(self, rec, rng: random.Random) -> dict:
        return {"image": self.image(self.locate(rec), rng), "instruction_input": rng.choice(self.pool),
                "answer": rec[1]}


@registry.register("dataset", "flickr_caption_to_phrase")
@registry.register("dataset", "flickr_CaptionToPhrase")  # TinyGPT-V's YAML key
class FlickrCaptionToPhraseBuilder(_FlickrBuilder):
    """captiontobbox.json [{"image_id", "caption", "output"}]: "[detection] {caption}" -> output."""

    default_prompts = DETECTION
    fields = ("caption", "output")

    def sample(self, rec, rng: random.Random) -> dict:
        return {"image": self.image(self.locate(rec), rng),
                "instruction_input": rng.choice(self.pool).format(rec[1]), "answer": rec[2]}


@registry.register("dataset", "flickr_object_to_phrase")
@registry.register("dataset", "flickr_ObjectToPhrase")  # TinyGPT-V's YAML key
class FlickrObjectToPhraseBuilder(_FlickrBuilder):
    """phrasetobbox.json [{"image_id", "phrase", "bbox": "{<..>...}"}]: "[detection] {phrase}" ->
    "<p>{phrase}</p> {bbox}"."""

    default_prompts = DETECTION
    fields = ("phrase", "bbox")

    def sample(self, rec, rng: random.Random) -> dict:
        return {"image": self.image(self.locate(rec), rng),
                "instruction_input": rng.choice(self.pool).format(rec[1]),
                "answer": f"{phrase(rec[1])} {rec[2]}"}
