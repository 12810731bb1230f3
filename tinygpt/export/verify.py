"""`--verify` (on by default): reload an exported directory with stock transformers in a process that
never imports tinygpt (stock_check.py) and compare it with tinygpt's model on the same image and
question: the same preprocessed pixels, a prompt of the same length, logits within `TOLERANCE` (fp32)
and the same greedy answer.  Any difference is an ExportError (the export is then not written)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..processors.build import eval_processor
from .targets import ExportError, Target

TOLERANCE = 1e-4  # max |logits difference|, fp32
QUESTION = "what colour is the circle?"
MAX_NEW_TOKENS = 12


def probe_image() -> Image.Image:
    """A fixed, non-square test picture: shapes on a noisy background."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([5, 5, 30, 30], fill="red")
    draw.rectangle([35, 10, 55, 35], fill="blue")
    return image


def stock_answer(directory: str, image_path: str, question: str, max_new_tokens: int, result: str) -> dict:
    """Run stock_check.py in a fresh interpreter (no PYTHONPATH, in the export directory) -> its arrays."""
    with open(os.path.join(os.path.dirname(__file__), "stock_check.py"), encoding="utf-8") as f:
        code = f.read()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code, directory, image_path, question, str(max_new_tokens), result],
                          cwd=directory, env=env, capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{directory}: stock transformers could not run the export: "
                          f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    with np.load(result) as arrays:
        return {k: arrays[k] for k in arrays.files}


@torch.no_grad()
def verify_directory(model, directory: str, target: Target, image: Image.Image | None = None,
                     question: str = QUESTION) -> dict:
    """Parity figures of `directory` against `model` (tinygpt's, fp32): {target, transformers, torch,
    max_abs_pixel_diff, max_abs_logits_diff, positions, vocab, answer, new_tokens}."""
    image = probe_image() if image is None else image
    with tempfile.TemporaryDirectory() as work:
        image_path = os.path.join(work, "probe.png")
        image.save(image_path)
        image = Image.open(image_path)
        stock = stock_answer(directory, image_path, question, MAX_NEW_TOKENS, os.path.join(work, "result.npz"))
    pixels = eval_processor(model.cfg)(image.convert("RGB"))[None]
    prompt = model.style.place_image(question)
    visual = model.encode_images(pixels)
    embeds, mask, _ = model.embed_inputs([prompt], visual)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits.float().numpy()
    answer = model.generate(pixels, [prompt], max_new_tokens=MAX_NEW_TOKENS)[0]

    theirs = stock["logits"]
    where = f"{directory} ({target.name})"
    if theirs.shape[1] != logits.shape[1]:
        raise ExportError(f"{where}: the processor's prompt {str(stock['prompt'])!r} has {theirs.shape[1]} "
                          f"tokens, tinygpt's layout {logits.shape[1]}")
    vocab = logits.shape[-1]
    figures = {"target": target.name, **json.loads(str(stock["versions"])),
               "max_abs_pixel_diff": float(np.abs(stock["pixel_values"] - pixels.numpy()).max()),
               "max_abs_logits_diff": float(np.abs(theirs[..., :vocab] - logits).max()),
               "positions": int(logits.shape[1]), "vocab": int(vocab),
               "answer": answer, "new_tokens": int(len(stock["new_ids"]))}
    if figures["max_abs_logits_diff"] > TOLERANCE:
        raise ExportError(f"{where}: logits differ from tinygpt's by {figures['max_abs_logits_diff']:.2e} "
                          f"(> {TOLERANCE}; pixels by {figures['max_abs_pixel_diff']:.2e})")
    stock_text = model.style.clean_answer(str(stock["text"]))
    if stock_text != answer:
        raise ExportError(f"{where}: stock transformers answers {stock_text!r}, tinygpt {answer!r}")
    return figures
