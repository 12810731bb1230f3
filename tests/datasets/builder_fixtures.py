"""Tiny files in the released formats, and a builder call, shared by the dataset tests."""
import json

from PIL import Image

import tinygpt.datasets  # noqa: F401  (registers the builders)
from tinygpt.common.config import DatasetConfig, ProcessorConfig
from tinygpt.common.registry import registry

S = 28  # the image size the builders produce in these tests


def jpg(path, size=(40, 30), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


def build(name, seed=0, **kw):
    kw.setdefault("vis_processor", ProcessorConfig(name="blip2_image_train", image_size=S))
    return registry.get("dataset", name)(DatasetConfig(builder=name, **kw), name=name, seed=seed).build()
