"""The `remote-code` target: exact TinyGPT-V (EVA ViT-g, Q-Former, TinyGPT-V's Phi-2) as a
trust_remote_code directory.

    model = AutoModelForImageTextToText.from_pretrained(DIR, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(DIR, trust_remote_code=True)

The classes are models/hf_tinygptv.py's, registered for the auto classes: `save_pretrained` copies that
module and the project modules it imports (phi.py, norms.py, projector.py) into DIR and writes the
`auto_map`; nothing in DIR imports tinygpt.  The weights are tinygpt's inference state dict as it is
(same attribute names).  Parity: verify.py, tests/export/test_remote_code.py.
"""
from __future__ import annotations

from ..common.config import Config
from ..models.hf_tinygptv import TinyGPTVConfig, TinyGPTVForConditionalGeneration, TinyGPTVProcessor


def write(cfg: Config, model, out: str, tokenizer, image_processor) -> None:
    from .hf import IMAGE_TOKEN, chat_template, generation_config, load_exactly, state_for

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = TinyGPTVConfig(
        vision_config=model.visual_encoder.config.to_dict(), qformer_config=model.qformer.config.to_dict(),
        text_config=model.llm.config.to_dict(), num_query_tokens=model.n_visual_tokens,
        proj_mid_dim=model.projector.fc1.out_features, ln_vision=model.ln_vision is not None,
        ln_vision_eps=model.ln_vision.eps if model.ln_vision is not None else 1e-5,
        image_token_id=image_token_id, architectures=[TinyGPTVForConditionalGeneration.__name__],
    )
    exported = TinyGPTVForConditionalGeneration(config).eval()
    load_exactly(exported, state_for(model, {}))
    exported.generation_config = generation_config(model, tokenizer)
    TinyGPTVConfig.register_for_auto_class()
    TinyGPTVForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    exported.save_pretrained(out)
    processor = TinyGPTVProcessor(image_processor, tokenizer, chat_template=chat_template(model, None),
                                  image_token=IMAGE_TOKEN, num_query_tokens=model.n_visual_tokens)
    TinyGPTVProcessor.register_for_auto_class("AutoProcessor")
    processor.save_pretrained(out)
