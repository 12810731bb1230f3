"""Instruction templates (MiniGPT-v2's released pools, which TinyGPT-V stage 4 trains on), how a
dataset wraps an instruction around the image, and the prompt-file reader.

Every instruction a dataset emits carries the image placeholder: a template without it is wrapped as
TinyGPT-V's dataset classes wrap theirs, `INSTRUCTION` ("<Img><ImageHere></Img> {} ", the trailing
space included: after the stage template a sample reads `... what color is the bus?  [/INST]`); a
template that places `<ImageHere>` itself (a prompts_path line, MiniGPT-4's alignment prompts) is
used as written.  The protocol (conversation/protocol.py) replaces `<ImageHere>` by the visual tokens
and wraps the whole instruction in the stage's template, so no stage template text appears here.
A template with `{}` is filled with the question / phrase / box; a dataset's `prompts_path` file
replaces its default pool (one template per line, its spaces kept).
"""
from __future__ import annotations

import os

from tinygpt.conversation.protocol import IMAGE_SLOT, IMAGE_TEXT

# `"<Img><ImageHere></Img> {} ".format(instruction)`: every TinyGPT-V dataset with an instruction.
INSTRUCTION = IMAGE_TEXT + " {} "
# A line of a model-level prompt file (MiniGPT-4's prompts/alignment.txt, TinyGPT-V's stage 3): the
# image, a space, the prompt, no trailing space.
PROMPT_LINE = IMAGE_TEXT + " {}"

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
    "A photo of ",  # the original's trailing spaces: "[caption] A photo of   [/INST]"
    "An image that shows ",
    "Write a short description for the image. ",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)]
# MiniGPT-4 / TinyGPT-V stage 3 (cc_sbu_align): prompts/alignment.txt, each line PROMPT_LINE.
ALIGNMENT = [
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
]


def all_templates() -> list[str]:
    """Every built-in template (the synthetic tokenizer is trained on these too)."""
    return VQA + REFER + IDENTIFY + GROUNDED_CAPTION + DETECTION + CAPTION + ALIGNMENT


def wrap(template: str, line_format: str = INSTRUCTION) -> str:
    """A template as a dataset emits it: as written when it places the image, else `line_format`."""
    return template if IMAGE_SLOT in template else line_format.format(template)


def load_prompts(path: str, dataset: str, slot: bool) -> list[str]:
    """Templates from a prompt file: one per line, blank lines and lines starting with '#' ignored.

    A line is used as written, its spaces included (the original reads prompt files with
    `splitlines()`: a trailing space is part of every sample).  With `slot`, every line must contain
    exactly one `{}` (filled with the question, phrase or box).  Errors name the dataset, the file and
    the line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datasets.{dataset}.prompts_path: {path} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = list(enumerate(f.read().splitlines(), 1))
    prompts = []
    for n, line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if slot and line.count("{}") != 1:
            raise ValueError(f"datasets.{dataset}.prompts_path: {path} line {n} must contain exactly one "
                             f"'{{}}' (where the question/phrase/box goes): {line!r}")
        prompts.append(line)
    if not prompts:
        raise ValueError(f"datasets.{dataset}.prompts_path: {path} holds no prompt")
    return prompts
