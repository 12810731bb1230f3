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
MAX_NEW_TOKENS = 12


def probes() -> list[tuple[Image.Image, str]]:
    """Fixed test pictures and questions: shapes on noise (wider than tall) and a flat tall one."""
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(noisy)
    draw.ellipse([5, 5, 30, 30], fill="red")
    draw.rectangle([35, 10, 55, 35], fill="blue")
    return [(noisy, "what colour is the circle?"), (Image.new("RGB", (33, 71), "green"), "[vqa] is it green?")]


def run_stock(mode: str, directory: str, payload, max_new_tokens: int, work: str, result: str) -> None:
    """Run stock_check.py's `mode` ("check" or "answer") on `payload` (its JSON input) in a fresh
    interpreter: no PYTHONPATH, in the export directory.  A failure is an ExportError with its last line."""
    with open(os.path.join(os.path.dirname(__file__), "stock_check.py"), encoding="utf-8") as f:
        code = f.read()
    payload_file = os.path.join(work, f"{mode}.json")
    with open(payload_file, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code, mode, directory, payload_file, str(max_new_tokens), result],
                          cwd=directory, env=env, capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{directory}: stock transformers could not run the export: "
                          f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")


@torch.no_grad()
def verify_directory(model, directory: str, target: Target,
                     cases: list[tuple[Image.Image, str]] | None = None) -> dict:
    """Parity figures of `directory` against `model` (tinygpt's, fp32) over `cases` (image, question),
    default `probes()`: {target, transformers, torch, probes, max_abs_pixel_diff, max_abs_logits_diff,
    positions, vocab, answer (the first probe's), answers, new_tokens}."""
    cases = probes() if cases is None else cases
    where = f"{directory} ({target.name})"
    with tempfile.TemporaryDirectory() as work:
        paths = [os.path.join(work, f"probe{i}.png") for i in range(len(cases))]
        for (image, _), path in zip(cases, paths):
            image.save(path)
        images = [Image.open(path).convert("RGB") for path in paths]
        result = os.path.join(work, "result.npz")
        run_stock("check", directory, [[p, q] for p, (_, q) in zip(paths, cases)], MAX_NEW_TOKENS, work, result)
        with np.load(result) as arrays:
            stock = {k: arrays[k] for k in arrays.files}
    figures = {"target": target.name, **json.loads(str(stock["versions"])), "probes": len(cases),
               "max_abs_pixel_diff": 0.0, "max_abs_logits_diff": 0.0, "positions": 0, "answers": []}
    for i, (image, (_, question)) in enumerate(zip(images, cases)):
        pixels = eval_processor(model.cfg)(image)[None]
        prompt = model.style.place_image(question)
        embeds, mask, _ = model.embed_inputs([prompt], model.encode_images(pixels))
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits.float().numpy()
        answer = model.generate(pixels, [prompt], max_new_tokens=MAX_NEW_TOKENS)[0]
        theirs = stock[f"logits_{i}"]
        if theirs.shape[1] != logits.shape[1]:
            raise ExportError(f"{where}: the processor's prompt {str(stock[f'prompt_{i}'])!r} has {theirs.shape[1]} "
                              f"tokens, tinygpt's layout {logits.shape[1]}")
        vocab = logits.shape[-1]
        pixel_diff = float(np.abs(stock[f"pixel_values_{i}"] - pixels.numpy()).max())
        diff = float(np.abs(theirs[..., :vocab] - logits).max())
        if diff > TOLERANCE:
            raise ExportError(f"{where}: logits differ from tinygpt's by {diff:.2e} (> {TOLERANCE}; pixels by "
                              f"{pixel_diff:.2e}) on {question!r}")
        stock_text = model.style.clean_answer(str(stock[f"text_{i}"]))
        if stock_text != answer:
            raise ExportError(f"{where}: stock transformers answers {stock_text!r}, tinygpt {answer!r} to {question!r}")
        figures.update(max_abs_pixel_diff=max(figures["max_abs_pixel_diff"], pixel_diff),
                       max_abs_logits_diff=max(figures["max_abs_logits_diff"], diff),
                       positions=figures["positions"] + int(logits.shape[1]), vocab=int(vocab))
        figures["answers"].append(answer)
    figures.update(answer=figures["answers"][0], new_tokens=int(len(stock["new_ids_0"])))
    return figures
