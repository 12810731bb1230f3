"""Run by verify.py as `python -c` in a fresh process: load an exported directory with stock
transformers only and answer one question about one image.  It must never import tinygpt (asserted
last), so it is itself torch + transformers + numpy only, and takes its inputs from argv:

    DIR IMAGE QUESTION MAX_NEW_TOKENS RESULT.npz

RESULT.npz: input_ids [1, T], pixel_values [1, 3, S, S], logits [1, T, V] (fp32, the prompt's),
new_ids [N] (greedy), text (the new tokens decoded), transformers / torch versions.
"""
import json
import sys

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoProcessor


def main(directory, image_path, question, max_new_tokens, result):
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    remote = bool(getattr(config, "auto_map", None))
    model_class = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    model = model_class.from_pretrained(directory, trust_remote_code=remote, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=remote)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    # Blip2Processor drops its chat_template when loaded (transformers 5.25); its tokenizer keeps it.
    templater = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    prompt = templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(images=Image.open(image_path), text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False,
                             tokenizer=processor.tokenizer)
    new = out[0, inputs["input_ids"].shape[1]:]
    np.savez(result, input_ids=inputs["input_ids"].numpy(), pixel_values=inputs["pixel_values"].float().numpy(),
             logits=logits.float().numpy(), new_ids=new.numpy(),
             text=np.array(processor.tokenizer.decode(new, skip_special_tokens=True)),
             prompt=np.array(prompt),
             versions=np.array(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__})))
    assert "tinygpt" not in sys.modules, "the stock check imported tinygpt"


main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
