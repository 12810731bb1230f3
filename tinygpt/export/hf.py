"""`--format hf`: a directory stock transformers (and the engines that load its classes) reads, for the
target the model's parts allow (targets.py), proven at export time by `--verify` (verify.py).

    python -m tinygpt.export --format hf --cfg-path eval_configs/tiny.yaml --out exported/tiny-hf

Every target writes config.json + model.safetensors (LoRA merged), generation_config.json (the trained
end marker as a stop string), and a processor: BLIP's image processor (bicubic resize to the tower's
size, its statistics), the tokenizer with an `<image>` token, and a chat_template that renders the
prompt style the model was trained with.  The directory is written beside `out` and moved into place
only once it is written and verified: a failed export leaves `out` as it was.
"""
from __future__ import annotations

import os
from importlib import import_module

import torch

from ..common import atomic
from ..common.config import Config, image_statistics
from ..conversation.chat_template import style_chat_template
from ..processors.image import IMAGE_STATS
from .directory import float_config
from .targets import BLIP2, LLAVA, REMOTE, ExportError, Target, choose_target

IMAGE_TOKEN = "<image>"
# target -> its module, whose write(cfg, model, out, tokenizer, image_processor) fills a directory
MODULES = {LLAVA: "llava", BLIP2: "blip2", REMOTE: "remote_code"}


def build_inference_model(cfg: Config):
    """The model as tinygpt answers with it: LoRA merged, fp32, eval mode."""
    import tinygpt

    return tinygpt.build_model(float_config(cfg), "cpu", training=False).float().eval()


def export_hf(cfg: Config, out: str, verify: bool = True, report=print) -> tuple[Target, dict | None]:
    """Write `out` for the chosen target (reported through `report`); with `verify`, reload it with stock
    transformers in a process without tinygpt and compare (an ExportError when it disagrees).
    Returns the target and the parity figures (None without verify)."""
    model = build_inference_model(cfg)
    target = choose_target(cfg.model, model.llm, cfg.source)
    report(f"target: {target.name} ({target.reason})")
    with atomic.staged_directory(out) as staging:
        tokenizer = tokenizer_with_image_token(model.tokenizer)
        import_module(f".{MODULES[target.name]}", __package__).write(cfg, model, staging, tokenizer,
                                                                     image_processor(cfg))
        figures = None
        if verify:
            from .verify import verify_directory

            figures = verify_directory(model, staging, target)
            report(f"verified with transformers {figures['transformers']}: max |logits diff| "
                   f"{figures['max_abs_logits_diff']:.2e}, answer {figures['answer']!r}")
        atomic.write_text(os.path.join(staging, "README.md"), model_card(cfg, model, target, figures))
    return target, figures


def tokenizer_with_image_token(tokenizer):
    """A copy of the model's tokenizer with `<image>` as a special token (one id, never split).  Its id
    may lie past the LM's vocabulary: the remote-code model never embeds it, the stock classes get room
    for it (fit_vocabulary)."""
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer


def image_processor(cfg: Config):
    """BLIP's image processor: bicubic resize of the whole image to S x S, [0, 1], the tower's statistics:
    processors/image.py's `blip2_image_eval` (the ONNX runtime's and these tests' parity checks)."""
    # The PIL backend by name: torchvision's bicubic resize (the default backend where torchvision is
    # installed) differs from PIL's, which tinygpt's processor uses.
    from transformers import BlipImageProcessorPil

    mean, std = IMAGE_STATS[image_statistics(cfg.model.vision)]
    size = cfg.model.vision.image_size
    return BlipImageProcessorPil(size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std),
                              do_convert_rgb=True)


def chat_template(model, n_image_tokens: int | None) -> str:
    """The model's prompt style as a Jinja chat template; the image as one `<image>` (the processor
    expands it) or, with `n_image_tokens`, already expanded."""
    return style_chat_template(model.style, IMAGE_TOKEN * (n_image_tokens or 1))


def generation_config(model, tokenizer, **extra):
    """Greedy by default; stops at EOS and at the trained end marker (a stop string: generate needs
    `tokenizer=` to use it, as every stop string does)."""
    from transformers import GenerationConfig

    style = model.style
    stops = [style.end_sym] if style.end_sym and style.end_sym != tokenizer.eos_token else None
    return GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, stop_strings=stops, do_sample=False, **extra)


def fit_vocabulary(llm, token_id: int):
    """`llm`, or a copy whose embeddings (and head) have room for `token_id` (a stock class embeds the
    image token before overwriting it); the new rows' logits are suppressed in generation_config."""
    if token_id < llm.get_input_embeddings().weight.shape[0]:
        return llm
    import copy

    llm = copy.deepcopy(llm)
    llm.resize_token_embeddings(token_id + 1, mean_resizing=False)
    return llm


def state_for(model, prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """The inference state dict (training aids left out), each name starting with a key of `prefixes`
    renamed to start with its value instead."""
    def rename(name: str) -> str:
        for ours, theirs in prefixes.items():
            if name.startswith(ours):
                return theirs + name[len(ours):]
        return name

    return {rename(k): v for k, v in model.state_dict().items() if not k.startswith(model.training_aid_prefixes)}


def load_exactly(target_model, state: dict, allowed_missing: tuple[str, ...] = ()) -> None:
    """Load `state` into a freshly built target model; every tensor must find its place and the only
    tensors left unset are `allowed_missing` prefixes (parts the target has and ours has not)."""
    result = target_model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if result.unexpected_keys or missing:
        raise ExportError(f"{type(target_model).__name__} does not hold this model: unplaced "
                          f"{result.unexpected_keys[:5]}, unset {missing[:5]}")


def model_card(cfg: Config, model, target: Target, figures: dict | None) -> str:
    import transformers

    from .directory import evaluation_section, parameter_rows

    lines = [f"# tinygpt model for transformers (exported from `{cfg.source}`)", "",
             f"Target: **{target.name}**: {target.reason}.", "",
             f"Prompt style: {model.style.describe()}; `processor.apply_chat_template` renders it.", "",
             "LoRA: merged into the base weights.", ""]
    if figures is None:
        lines += [f"Not verified (`--no-verify`); written with transformers {transformers.__version__}.", ""]
    else:
        lines += [f"Verified at export time with transformers {figures['transformers']}, torch "
                  f"{figures['torch']}, in a process that never imported tinygpt: on the same images and "
                  "questions, the directory loaded by stock transformers and tinygpt's model give", "",
                  f"* max |logits difference| (fp32, {figures['probes']} images, {figures['positions']} positions "
                  f"x {figures['vocab']} tokens): {figures['max_abs_logits_diff']:.3e}",
                  f"* the same greedy answer: {figures['answer']!r} ({figures['new_tokens']} tokens; "
                  f"all {figures['probes']} answers equal)", ""]
    lines += parameter_rows(model) + evaluation_section(cfg)
    return "\n".join(lines) + "\n"
