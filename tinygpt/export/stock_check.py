"""Run by verify.py as `python -c` in a fresh process: load an exported directory with stock
transformers only and answer one question about one image.  It must never import tinygpt (asserted
last), so it is itself torch + transformers + numpy only, and takes its inputs from argv:

    DIR PROBES.json MAX_NEW_TOKENS RESULT.npz

PROBES.json: [[image path, question], ...].  RESULT.npz, for probe i: input_ids_i [1, T],
pixel_values_i [1, 3, S, S], logits_i [1, T, V] (fp32, the prompt's), new_ids_i [N] (greedy), text_i
(the new tokens decoded), prompt_i; and the transformers / torch versions.
"""
import json
import sys

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoProcessor


def main(directory, probes, max_new_tokens, result):
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    remote = bool(getattr(config, "auto_map", None))
    model_class = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    model = model_class.from_pretrained(directory, trust_remote_code=remote, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=remote)
    # Blip2Processor drops its chat_template when loaded (transformers 5.25); its tokenizer keeps it.
    templater = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    with open(probes, encoding="utf-8") as f:
        probes = json.load(f)
    arrays = {"versions": np.array(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))}
    for i, (image_path, question) in enumerate(probes):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(images=Image.open(image_path), text=prompt, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False,
                                 tokenizer=processor.tokenizer)
        new = out[0, inputs["input_ids"].shape[1]:]
        arrays.update({f"input_ids_{i}": inputs["input_ids"].numpy(),
                       f"pixel_values_{i}": inputs["pixel_values"].float().numpy(),
                       f"logits_{i}": logits.float().numpy(), f"new_ids_{i}": new.numpy(),
                       f"text_{i}": np.array(processor.tokenizer.decode(new, skip_special_tokens=True)),
                       f"prompt_{i}": np.array(prompt)})
    np.savez(result, **arrays)
    assert "tinygpt" not in sys.modules, "the stock check imported tinygpt"


main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
