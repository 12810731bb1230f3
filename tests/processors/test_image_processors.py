"""blip2_image_train (TinyGPT-V's resize) / lavis_blip2_image_train (LAVIS's crop) / blip2_image_eval:
shapes, CLIP normalisation, seeded determinism, no-crop mode."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tinygpt.common.config import ProcessorConfig
from tinygpt.processors import (
    CLIP_MEAN,
    CLIP_STD,
    Blip2ImageTrainProcessor,
    build_processor,
    denormalize,
    to_pil,
)


def _gradient(w=90, h=60):
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 255 // w, y * 255 // h, 128) for y in range(h) for x in range(w)])
    return img


@pytest.mark.parametrize("name", ["blip2_image_train", "lavis_blip2_image_train", "blip2_image_eval"])
def test_shape_dtype_from_any_mode(name):
    proc = build_processor(ProcessorConfig(name=name, image_size=32))
    for img in (_gradient(), _gradient().convert("L"), _gradient().convert("RGBA"), Image.new("P", (7, 300))):
        out = proc(img, random.Random(0))
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("name", ["blip2_image_train", "blip2_image_eval"])
def test_solid_colour_normalises_to_clip_values(name):
    proc = build_processor(ProcessorConfig(name=name, image_size=16))
    out = proc(Image.new("RGB", (40, 30), (255, 0, 128)), random.Random(1))
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), CLIP_MEAN, CLIP_STD)]
    for c in range(3):
        assert torch.allclose(out[c], torch.full((16, 16), expected[c]), atol=1e-5)


def test_lavis_crop_is_deterministic_given_rng_and_varies_without():
    proc = build_processor(ProcessorConfig(name="lavis_blip2_image_train", image_size=24, min_scale=0.3))
    img = _gradient()
    a, b = proc(img, random.Random(7)), proc(img, random.Random(7))
    assert torch.equal(a, b)
    others = [proc(img, random.Random(s)) for s in range(5)]
    assert any(not torch.equal(a, o) for o in others)
    assert not proc.keeps_whole_image


def test_blip2_image_train_is_tinygpt_v_whole_image_resize_whatever_the_scales():
    # TinyGPT-V's blip2_image_train: Resize((S, S), bicubic) -> ToTensor -> Normalize(CLIP); it
    # accepts min_scale/max_scale and ignores them (LAVIS's crop would see other pixels).
    img = _gradient()
    pixels = np.asarray(img.resize((20, 20), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) \
        / torch.tensor(CLIP_STD).view(3, 1, 1)
    for scales in ({}, {"min_scale": 0.5}, {"min_scale": 0.2, "max_scale": 0.6}):
        train = build_processor(ProcessorConfig(name="blip2_image_train", image_size=20, **scales))
        assert train.keeps_whole_image
        for seed in range(3):
            assert torch.allclose(train(img, random.Random(seed)), expected, atol=1e-6)
    evalp = build_processor(ProcessorConfig(name="blip2_image_eval", image_size=20))
    lavis_whole = build_processor(ProcessorConfig(name="lavis_blip2_image_train", image_size=20, min_scale=1.0))
    assert evalp.keeps_whole_image and lavis_whole.keeps_whole_image
    assert torch.equal(train(img), evalp(img)) and torch.equal(lavis_whole(img, random.Random(3)), evalp(img))


def test_denormalize_and_to_pil_invert_the_transform():
    proc = build_processor(ProcessorConfig(name="blip2_image_eval", image_size=8))
    img = Image.new("RGB", (8, 8), (10, 200, 99))
    t = proc(img)
    assert torch.allclose(denormalize(t)[:, 0, 0], torch.tensor([10, 200, 99]) / 255, atol=1e-5)
    assert denormalize(t.unsqueeze(0)).shape == (1, 3, 8, 8)
    assert to_pil(t).getpixel((3, 3)) == (10, 200, 99)
    with pytest.raises(ValueError):
        denormalize(torch.zeros(4, 8, 8))


def test_bad_config_names_the_field():
    for name in ("blip2_image_train", "lavis_blip2_image_train"):
        with pytest.raises(ValueError, match="min_scale"):
            build_processor(ProcessorConfig(name=name, min_scale=0.9, max_scale=0.5))
    with pytest.raises(ValueError, match="image_size"):
        Blip2ImageTrainProcessor(image_size=0)
    with pytest.raises(KeyError, match="registered processors"):
        build_processor(ProcessorConfig(name="nope"))


def test_imagenet_statistics_for_towers_trained_with_them():
    proc = build_processor(ProcessorConfig(name="blip2_image_eval", image_size=8, normalization="imagenet"))
    out = proc(Image.new("RGB", (8, 8), (255, 0, 128)))
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected), atol=1e-5)
