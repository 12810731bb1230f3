"""BLIP-2 image transforms with PIL + torch only (torchvision is deliberately not a dependency).

Both processors take a PIL image of any size/mode and return a normalised FloatTensor [3, S, S].

`blip2_image_train`: TinyGPT-V's (MiniGPT-4's) training transform: resize the whole image to (S, S)
bicubic -> tensor -> normalisation.  Like the original it accepts `min_scale`/`max_scale` and does
not use them.  No crop, so boxes in the text still point at the right pixels and the frozen towers'
features of an image never change (the feature cache is exact).
`lavis_blip2_image_train`: LAVIS's BLIP-2 augmentation, a random resized crop (area fraction in
[min_scale, max_scale], aspect ratio in [3/4, 4/3], bicubic) -> tensor -> normalisation; only where a
YAML names it (grounding builders refuse it unless min_scale is 1.0: a crop moves the boxes).
`blip2_image_eval`: resize to (S, S) bicubic -> tensor -> normalisation.
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from tinygpt.common.config import ProcessorConfig
from tinygpt.common.registry import registry

# OpenAI CLIP's statistics; EVA-CLIP and BLIP-2 were trained with these, so the frozen ViT expects them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP's towers were trained on images scaled to [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# ImageNet's, which DINOv2, DeiT, BEiT and most timm / torchvision-trained towers expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The (mean, std) each vision tower kind (`model.vision.kind`, models/vision.py) expects, and what a
# `model.vision.normalization` may name for a `kind: hf` tower.
IMAGE_STATS = {
    "eva_vit_g": (CLIP_MEAN, CLIP_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": (SIGLIP_MEAN, SIGLIP_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}



def image_stats(cfg: ProcessorConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a processor config asks for (unset: EVA's, i.e. OpenAI CLIP's)."""
    kind = cfg.normalization or "eva_vit_g"
    if kind not in IMAGE_STATS:
        raise ValueError(f"processor {cfg.name}: normalization {kind!r} is not one of {', '.join(IMAGE_STATS)}")
    return IMAGE_STATS[kind]


_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # the aspect-ratio range of the standard random resized crop


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> FloatTensor [3, H, W] in [0, 1] (RGB)."""
    arr = np.array(image.convert("RGB"), dtype=np.float32)  # copy: torch wants a writable buffer
    return torch.from_numpy(arr).div_(255.0).permute(2, 0, 1).contiguous()


def _stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    shape = (3, 1, 1) if like.dim() == 3 else (1, 3, 1, 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


def normalize(t: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """[3, H, W] or [B, 3, H, W] in [0, 1] -> (t - mean) / std per channel."""
    return (t - _stats(mean, t)) / _stats(std, t)


def denormalize(t: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Inverse of `normalize`, clamped to [0, 1]; [3, H, W] or [B, 3, H, W] (the demo draws with it)."""
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"denormalize expects [3, H, W] or [B, 3, H, W], got {list(t.shape)}")
    return (t.float() * _stats(std, t.float()) + _stats(mean, t.float())).clamp_(0.0, 1.0)


def to_pil(t: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Image.Image:
    """A normalised [3, H, W] tensor back to a PIL RGB image (for drawing boxes on what the model saw)."""
    arr = (denormalize(t.detach().cpu(), mean, std) * 255.0).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr, mode="RGB")


def crop_box(width: int, height: int, scale: tuple[float, float], rng) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random crop covering `scale` of the area with aspect ratio in [3/4, 4/3].

    Ten tries at a random (area, ratio); if none fits, a centred crop with the image's own ratio
    clamped into range (for a square or 4:3 image that is the whole image).
    """
    area = width * height
    log_lo, log_hi = math.log(_RATIO[0]), math.log(_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    own = width / height
    if own < _RATIO[0]:
        w, h = width, int(round(width / _RATIO[0]))
    elif own > _RATIO[1]:
        w, h = int(round(height * _RATIO[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _check(cfg: ProcessorConfig) -> None:
    if cfg.image_size <= 0:
        raise ValueError(f"processor {cfg.name}: image_size must be positive, got {cfg.image_size}")
    if not 0.0 < cfg.min_scale <= cfg.max_scale <= 1.0:
        raise ValueError(f"processor {cfg.name}: need 0 < min_scale <= max_scale <= 1, "
                         f"got min_scale={cfg.min_scale}, max_scale={cfg.max_scale}")


@registry.register("processor", "lavis_blip2_image_train")
class LavisBlip2ImageTrainProcessor:
    """PIL image -> FloatTensor [3, S, S]: random resized crop (bicubic), normalised (LAVIS's)."""

    def __init__(self, image_size: int = 224, min_scale: float = 0.5, max_scale: float = 1.0,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        _check(ProcessorConfig(name="lavis_blip2_image_train", image_size=image_size, min_scale=min_scale,
                               max_scale=max_scale))
        self.image_size = image_size
        self.scale = (float(min_scale), float(max_scale))
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_config(cls, cfg: ProcessorConfig) -> "LavisBlip2ImageTrainProcessor":
        return cls(cfg.image_size, cfg.min_scale, cfg.max_scale, *image_stats(cfg))

    @property
    def keeps_whole_image(self) -> bool:
        """True when no crop happens, so pixel positions (boxes) survive the transform."""
        return self.scale[0] >= 1.0

    def __call__(self, image: Image.Image, rng: Optional[random.Random] = None) -> torch.Tensor:
        """`rng` makes the crop reproducible (datasets pass a per-sample one); default: module `random`."""
        image = image.convert("RGB")
        size = (self.image_size, self.image_size)
        if self.keeps_whole_image:
            out = image.resize(size, Image.Resampling.BICUBIC)
        else:
            left, top, w, h = crop_box(image.width, image.height, self.scale, rng or random)
            out = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        return normalize(to_tensor(out), self.mean, self.std)


@registry.register("processor", "blip2_image_eval")
class Blip2ImageEvalProcessor:
    """PIL image -> FloatTensor [3, S, S]: bicubic resize of the whole image, CLIP-normalised."""

    name = "blip2_image_eval"
    keeps_whole_image = True

    def __init__(self, image_size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        if image_size <= 0:
            raise ValueError(f"processor {self.name}: image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_config(cls, cfg: ProcessorConfig) -> "Blip2ImageEvalProcessor":
        return cls(cfg.image_size, *image_stats(cfg))

    def __call__(self, image: Image.Image, rng: Optional[random.Random] = None) -> torch.Tensor:
        """`rng` is accepted (and unused) so datasets can call every image processor the same way."""
        # convert() copies even an RGB image: skip it then (a 4096 px upload is 48 MiB a copy).
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        out = rgb.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return normalize(to_tensor(out), self.mean, self.std)


@registry.register("processor", "blip2_image_train")
class Blip2ImageTrainProcessor(Blip2ImageEvalProcessor):
    """TinyGPT-V's `blip2_image_train`: the eval transform (whole-image bicubic resize); `rng` unused.

    MiniGPT-4 replaced LAVIS's random resized crop by this resize and kept the name and the
    min_scale/max_scale arguments, which it ignores; `lavis_blip2_image_train` is the crop.
    """

    name = "blip2_image_train"

    @classmethod
    def from_config(cls, cfg: ProcessorConfig) -> "Blip2ImageTrainProcessor":
        _check(cfg)  # min_scale/max_scale are unused, but a nonsense range in a YAML still fails at start-up
        return super().from_config(cfg)
