"""The `blip2` target: EVA ViT-g + Q-Former + a stock causal LM as Blip2ForConditionalGeneration
(what vLLM's BLIP-2 loads), with stock Blip2Processor.

    model = Blip2ForConditionalGeneration.from_pretrained(DIR)      # or AutoModelForImageTextToText
    processor = AutoProcessor.from_pretrained(DIR)

The mapping, part by part:
  visual_encoder.*          -> vision_model.* (transformers' BLIP-2 tower is LAVIS's EVA ViT-g)
  ln_vision.*               -> vision_model.post_layernorm.* (BLIP-2's ln_vision; HF builds it with the
                               tower's eps, 1e-6, where LAVIS uses 1e-5: the one inexact part, within
                               verify's tolerance)
  qformer.*, query_tokens   -> the same names
  projector fc2(fc1(x))     -> language_projection: W = W2 W1, b = W2 b1 + b2 (no activation between
                               them, so the fold is exact up to rounding)
  llm.*                     -> language_model.*
The image tokens: Blip2Processor would put them in front of the text; the export sets its
`num_query_tokens` to None and the chat_template writes all Q `<image>` tokens where the trained
template places the image.  Blip2Processor loses its chat_template when loaded (transformers 5.25), so
the tokenizer carries it too: `processor.tokenizer.apply_chat_template(messages, tokenize=False,
add_generation_prompt=True)`.
"""
from __future__ import annotations

import torch

from ..common.config import Config


def fold_projector(fc1: torch.nn.Linear, fc2: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """fc2(fc1(x)) as one Linear: (weight [out, in], bias [out]), computed in float64."""
    w1, w2 = fc1.weight.double(), fc2.weight.double()
    weight = w2 @ w1
    bias = w2 @ fc1.bias.double() + fc2.bias.double()
    return weight.to(fc1.weight.dtype), bias.to(fc1.weight.dtype)


def write(cfg: Config, model, out: str, tokenizer, image_processor) -> None:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    from .hf import IMAGE_TOKEN, chat_template, fit_vocabulary, generation_config, load_exactly, state_for

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    llm = fit_vocabulary(model.llm, image_token_id)
    config = Blip2Config(vision_config=model.visual_encoder.config.to_dict(),
                         qformer_config=model.qformer.config.to_dict(), text_config=llm.config.to_dict(),
                         num_query_tokens=model.n_visual_tokens, image_token_index=image_token_id,
                         architectures=[Blip2ForConditionalGeneration.__name__])
    exported = Blip2ForConditionalGeneration(config).eval()
    names = {"visual_encoder.": "vision_model.", "ln_vision.": "vision_model.post_layernorm."}
    state = {k: v for k, v in state_for(model, names).items() if not k.startswith(("projector.", "llm."))}
    state.update(zip(("language_projection.weight", "language_projection.bias"),
                     fold_projector(model.projector.fc1, model.projector.fc2)))
    state.update({f"language_model.{k}": v for k, v in llm.state_dict().items()})  # as fit_vocabulary left it
    load_exactly(exported, state)
    exported.generation_config = generation_config(model, tokenizer, suppress_tokens=[image_token_id])
    exported.save_pretrained(out)
    # Blip2Processor (transformers 5.25) drops the chat_template it is loaded with; the tokenizer keeps it.
    tokenizer.chat_template = chat_template(model, model.n_visual_tokens)
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=None)
    processor.chat_template = tokenizer.chat_template
    processor.save_pretrained(out)
