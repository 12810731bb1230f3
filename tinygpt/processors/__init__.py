"""Image and text transforms, registered under the names a YAML `vis_processor`/`text_processor` uses.

Importing this package registers: blip2_image_train, lavis_blip2_image_train, blip2_image_eval, blip_caption,
identity_text.
"""
from tinygpt.processors.build import build_processor
from tinygpt.processors.image import (
    CLIP_MEAN,
    CLIP_STD,
    Blip2ImageEvalProcessor,
    Blip2ImageTrainProcessor,
    LavisBlip2ImageTrainProcessor,
    denormalize,
    to_pil,
    to_tensor,
)
from tinygpt.processors.text import BlipCaptionProcessor, IdentityTextProcessor

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "Blip2ImageEvalProcessor", "Blip2ImageTrainProcessor", "BlipCaptionProcessor",
    "IdentityTextProcessor", "LavisBlip2ImageTrainProcessor", "build_processor", "denormalize", "to_pil", "to_tensor",
]
