"""Run by verify.py and stock_eval.py as `python -c` in a fresh process: load an exported directory with
stock transformers only and answer questions about images.  It must never import tinygpt (asserted
last), so it is itself torch + transformers + numpy only, and takes its inputs from argv:

    check  DIR PROBES.json MAX_NEW_TOKENS RESULT.npz
    answer DIR JOBS.json MAX_NEW_TOKENS RESULT.json

check: PROBES.json [[image path, question], ...], one at a time.  RESULT.npz, for probe i:
input_ids_i [1, T], pixel_values_i [1, 3, S, S], logits_i [1, T, V] (fp32, the prompt's), new_ids_i [N]
(greedy), text_i (the new tokens decoded), prompt_i; and the transformers / torch versions.
answer: JOBS.json [[[image path, question], ...], ...] batches, asked as batches (left padding,
greedy); RESULT.json the decoded answers in job order.
"""
import json
import sys

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoProcessor


def load(directory):
    """(model, processor, templater): the auto classes, fp32; remote code only where config.json asks."""
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    remote = bool(getattr(config, "auto_map", None))
    model_class = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    model = model_class.from_pretrained(directory, trust_remote_code=remote, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=remote)
    # Blip2Processor drops its chat_template when loaded (transformers 5.25); its tokenizer keeps it.
    templater = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    return model, processor, templater


def prompt(templater, question):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(model, processor, inputs, max_new_tokens):
    """Greedy new tokens [B, N] (the end-marker stop string needs the tokenizer)."""
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False,
                         tokenizer=processor.tokenizer)
    return out[:, inputs["input_ids"].shape[1]:]


@torch.no_grad()
def check(directory, probes, max_new_tokens, result):
    model, processor, templater = load(directory)
    with open(probes, encoding="utf-8") as f:
        probes = json.load(f)
    arrays = {"versions": np.array(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))}
    for i, (image_path, question) in enumerate(probes):
        text = prompt(templater, question)
        inputs = processor(images=Image.open(image_path), text=text, return_tensors="pt")
        new = generate(model, processor, inputs, max_new_tokens)[0]
        arrays.update({f"input_ids_{i}": inputs["input_ids"].numpy(),
                       f"pixel_values_{i}": inputs["pixel_values"].float().numpy(),
                       f"logits_{i}": model(**inputs).logits.float().numpy(), f"new_ids_{i}": new.numpy(),
                       f"text_{i}": np.array(processor.tokenizer.decode(new, skip_special_tokens=True)),
                       f"prompt_{i}": np.array(text)})
    np.savez(result, **arrays)


@torch.no_grad()
def answer(directory, jobs, max_new_tokens, result):
    model, processor, templater = load(directory)
    processor.tokenizer.padding_side = "left"
    with open(jobs, encoding="utf-8") as f:
        batches = json.load(f)
    answers = []
    for batch in batches:
        images = [Image.open(path) for path, _ in batch]
        inputs = processor(images=images, text=[prompt(templater, q) for _, q in batch], padding=True,
                           return_tensors="pt")
        new = generate(model, processor, inputs, max_new_tokens)
        answers += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
    with open(result, "w", encoding="utf-8") as f:
        json.dump(answers, f)


{"check": check, "answer": answer}[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
assert "tinygpt" not in sys.modules, "the stock check imported tinygpt"
