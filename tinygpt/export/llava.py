"""The `llava` target: a CLIP / SigLIP tower + LLaVA's mlp2x_gelu + a stock causal LM as
LlavaForConditionalGeneration, with stock LlavaProcessor (what vLLM, SGLang, LMDeploy, TGI and
llama.cpp's converter load).

    model = LlavaForConditionalGeneration.from_pretrained(DIR)      # or AutoModelForImageTextToText
    processor = AutoProcessor.from_pretrained(DIR)

The mapping, part by part:
  visual_encoder.*     -> model.vision_tower.* (the same CLIP / SigLIP class; its post_layernorm, which
                          neither reads -- hidden states are taken before it -- is left at its init)
  feature_layer        -> vision_feature_layer; keep_cls -> vision_feature_select_strategy (`full`
                          keeps every token, `default` drops CLIP's CLS); SigLIP has no CLS: `full`
  projector.fc1 / fc2  -> model.multi_modal_projector.linear_1 / linear_2 (GELU between: `gelu`)
  llm.model.*          -> model.language_model.*;  llm.lm_head.* -> lm_head.*
The processor's image token count is the tower's grid (+ CLS when kept), the processor's chat_template
renders the trained prompt style with one `<image>` where training put the image.
"""
from __future__ import annotations

from ..common.config import Config
from ..models.vision import TOWERS


def write(cfg: Config, model, out: str, tokenizer, image_processor) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from .hf import IMAGE_TOKEN, chat_template, fit_vocabulary, generation_config, load_exactly, state_for

    vision = cfg.model.vision
    has_cls = TOWERS[vision.kind].has_cls
    strategy = "default" if has_cls and not vision.keep_cls else "full"
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    llm = fit_vocabulary(model.llm, image_token_id)
    config = LlavaConfig(vision_config=model.visual_encoder.config.to_dict(), text_config=llm.config.to_dict(),
                         image_token_index=image_token_id, image_seq_length=model.n_visual_tokens,
                         projector_hidden_act="gelu", vision_feature_select_strategy=strategy,
                         vision_feature_layer=vision.feature_layer, multimodal_projector_bias=True,
                         architectures=[LlavaForConditionalGeneration.__name__])
    exported = LlavaForConditionalGeneration(config).eval()
    names = {"visual_encoder.": "model.vision_tower.", "projector.fc1.": "model.multi_modal_projector.linear_1.",
             "projector.fc2.": "model.multi_modal_projector.linear_2."}
    state = {k: v for k, v in state_for(model, names).items() if not k.startswith("llm.")}
    for name, tensor in llm.state_dict().items():  # the LM as fit_vocabulary left it
        state["lm_head." + name[len("lm_head."):] if name.startswith("lm_head.")
              else "model.language_model." + name[len("model."):]] = tensor
    tower = "model.vision_tower." + ("vision_model." if hasattr(exported.model.vision_tower, "vision_model") else "")
    load_exactly(exported, state, allowed_missing=(tower + "post_layernorm.", tower + "head."))
    exported.generation_config = generation_config(model, tokenizer, suppress_tokens=[image_token_id])
    exported.save_pretrained(out)
    processor = LlavaProcessor(image_processor, tokenizer, patch_size=vision.patch_size,
                               vision_feature_select_strategy=strategy, chat_template=chat_template(model, None),
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=int(has_cls))
    processor.save_pretrained(out)
