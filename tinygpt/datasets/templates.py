"""Instruction templates (MiniGPT-v2's released pools, which TinyGPT-V stage 4 trains on) and the
prompt-file reader.

Every instruction a dataset emits carries the image placeholder (`protocol.place_image`); the
protocol (conversation/protocol.py) replaces `<ImageHere>` by the visual tokens and wraps the whole
instruction in the stage's template, so no template text appears here.
A template with `{}` is filled with the question / phrase / box; a dataset's `prompts_path` file
replaces its default pool (one template per line).
"""
from __future__ import annotations

import os

VQA = [
    "[vqa] {}",
    "[vqa] Based on the image, respond to this question with a short answer: {}",
]
REFER = [
    "[refer] {}",
    "[refer] give me the location of {}",
    "[refer] where is {} ?",
    "[refer] from this image, tell me the location of {}",
    "[refer] the location of {} is",
    "[refer] could you tell me the location for {} ?",
    "[refer] where can I locate the {} ?",
]
IDENTIFY = [
    "[identify] {}",
    "[identify] what object is in this location {}",
    "[identify] identify the object present at this location {}",
    "[identify] what is it in {}",
    "[identify] describe this object in {}",
    "[identify] this {} is",
    "[identify] the object in {} is",
]
GROUNDED_CAPTION = [
    "[grounding] please describe this image in details",
    "[grounding] describe this image as detailed as possible",
    "[grounding] summarize this image in details",
    "[grounding] give a thorough description of what you see in this image",
]
DETECTION = ["[detection] {}"]
CAPTION = [f"[caption] {p}" for p in (
    "Briefly describe this image.",
    "Provide a concise depiction of this image.",
    "Present a short description of this image.",
    "Summarize this image in a few words.",
    "A short image caption:",
    "A short image description:",
    "A photo of",
    "An image that shows",
    "Write a short description for the image.",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)]
# MiniGPT-4 / TinyGPT-V stage 3 (cc_sbu_align): prompts/alignment.txt.
ALIGNMENT = [
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
]


def all_templates() -> list[str]:
    """Every built-in template (the synthetic tokenizer is trained on these too)."""
    return VQA + REFER + IDENTIFY + GROUNDED_CAPTION + DETECTION + CAPTION + ALIGNMENT


def load_prompts(path: str, dataset: str, slot: bool) -> list[str]:
    """Templates from a prompt file: one per line, blank lines and lines starting with '#' ignored.

    With `slot`, every line must contain exactly one `{}` (filled with the question, phrase or box).
    Errors name the dataset, the file and the line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datasets.{dataset}.prompts_path: {path} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    prompts = []
    for n, line in lines:
        if not line or line.startswith("#"):
            continue
        if slot and line.count("{}") != 1:
            raise ValueError(f"datasets.{dataset}.prompts_path: {path} line {n} must contain exactly one "
                             f"'{{}}' (where the question/phrase/box goes): {line!r}")
        prompts.append(line)
    if not prompts:
        raise ValueError(f"datasets.{dataset}.prompts_path: {path} holds no prompt")
    return prompts
