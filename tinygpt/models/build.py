"""Config -> a TinyGPT-V model with every weight file the config names loaded.

The order is the order a user thinks in: architecture, base weights (EVA ViT-g, BLIP-2 Q-Former,
Phi-2), then `model.ckpt` files (a previous stage's output, TinyGPT-V's published `.pth`, or ours)
applied in order.  Every load prints a report of keys loaded / ignored / missing.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from ..common import device as devices
from ..common.config import Config, ConfigError, ModelConfig, require_file
from ..common.errors import UserError
from ..common.registry import registry
from ..conversation.protocol import PromptStyle
from . import compute_dtype, quantize, weights
from ..conversation.chat_template import FROM_TOKENIZER, chat_template_style
from .llm import TINYGPTV_FAMILY, load_llm_config
from .norms import FloatCompute

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    # Creating parameters directly in their final dtype avoids a full fp32 copy of a 2.7B LLM.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# `quantize: int8` with `dtype: auto` (CPU inference): where the float tensors left beside the int8
# layers cost least.  The LLM's are the projector and, where lm_head is tied to the input embeddings,
# that shared table (0.26 GB at full size in bf16, 0.5 GB in fp32): bf16, which is also what the int8
# embeddings dequantize to, so the LLM's activations and KV cache are bf16 (fp32 ones measured 4%
# faster per token, at twice the cache; docs/quantization.md).  The image side's int8
# kernel takes and returns fp32 and its float tensors are a few MB: fp32 (in bf16 every int8 Linear
# converted its input and output: the 448 px encode took 5-10% longer, docs/quantization.md).
_INT8_AUTO_DTYPE = {"llm": torch.bfloat16, "vision": torch.float32}


def int8_parts(cfg: ModelConfig, device: torch.device, training: bool) -> set[str]:
    """The parts ("llm", "vision") a build on `device` makes int8 (`model.<part>.quantize`)."""
    return {part for part in ("llm", "vision")
            if not training and device.type == "cpu" and getattr(cfg, part).quantize == quantize.INT8}


def storage_dtype(cfg: ModelConfig, part: str, device: torch.device | str, training: bool = False) -> torch.dtype:
    """The dtype `part` ("llm": everything but the image side; "vision") is stored in when built on
    `device`: `model.<part>.dtype`, its auto resolved (for int8 parts: _INT8_AUTO_DTYPE)."""
    device = torch.device(device)
    section = getattr(cfg, part)
    if part in int8_parts(cfg, device, training) and section.dtype == "auto":
        return _INT8_AUTO_DTYPE[part]
    return _tower_dtype(device, section.dtype, training and section.train)


def _tower_dtype(device: torch.device, requested: str, trains: bool) -> torch.dtype:
    if trains or device.type == "meta":
        return torch.float32
    if requested != "auto":
        return _DTYPES[requested]
    return devices.frozen_dtype(device)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # not a tokenizer directory / file
        raise UserError(f"model.llm.tokenizer: {path} is not a readable Hugging Face tokenizer "
                        f"({' '.join(str(exc).split())[:200]})") from None
    if tokenizer.pad_token_id is None:
        # Phi-2 ships no pad token; its EOS is the usual stand-in (labels mask the padding).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(cfg: Config | ModelConfig, device: torch.device | str | None = None, *,
                load_weights: bool = True, training: bool = True, source: str | None = None):
    """Build the model the config describes on `device` (default: run.device resolved).

    device="meta" builds the full-size architecture without memory (for counting parameters);
    `load_weights=False` skips every weight file (random init, e.g. for benchmarks).

    training=True (train.py): what the YAML says trains is trainable and kept in fp32 with the
    Q-Former, projector and norms; frozen towers in `model.{vision,llm}.dtype`.
    training=False (chat, demo, API, evaluation, benchmarks): an inference model, returned in eval
    mode: LoRA merged into the base weights (no adapter modules left), nothing requires grad, and
    every tensor in the LLM's frozen dtype (`model.llm.dtype`, auto = `device.frozen_dtype`: bf16 or
    fp16 on accelerators, fp32 on CPU) except the ViT (`model.vision.dtype`) and the fp32 norm layers
    (norms.py; they compute in fp32 whatever the activations are).  Built in that dtype directly,
    so no fp32 copy of a half-precision model ever exists (a ViT whose `model.vision.dtype` differs
    from the LLM's is converted once, as in training mode).
    """
    model_cfg, device, source = _where(cfg, device, source)
    on_meta = device.type == "meta"
    if not on_meta:
        quantize.check_int8(model_cfg, device, training)  # before minutes of building, not after
    load_weights = load_weights and not on_meta
    llm_config, tokenizer = _llm_config_and_tokenizer(model_cfg, source, with_tokenizer=not on_meta)
    _template_from_tokenizer(model_cfg, tokenizer)
    resolve_prompt_style(model_cfg, source, warn=not training, read_checkpoints=load_weights)
    model = _instantiate(model_cfg, llm_config, tokenizer, device, training, source)
    if training:
        _prepare_for_training(model, model_cfg)
    _norms_in_fp32(model)
    reports = _load_all(model, model_cfg, source) if load_weights else []  # checked against the YAML's trainable set
    merged = None if training else _to_inference(model)
    if model_cfg.llm.load_in_8bit and not on_meta:
        quantize.quantize_llm_8bit(model, device)
    computes = []
    if not training and not on_meta:
        # each component's compute dtype for this device
        computes = compute_dtype.apply(model, device, model_cfg.compute_dtype).choices
    if int8_parts(model_cfg, device, training):
        quantize.return_freed_pages()  # the build's freed temporaries: not kept resident under every turn
    if not on_meta:
        log.info("%s", _summary(model, device, reports, merged, computes))
    return model


def _summary(model, device, reports, merged, computes) -> str:
    """The one line a model load prints (the details are logged at DEBUG)."""
    loaded = (f"{sum(len(r.loaded) for r in reports)} tensors from {len(reports)} file(s)" if reports
              else "no weight files (random init)")
    lora = getattr(model, "lora_targets", None)
    if merged is not None:
        use = f"inference ({merged} LoRA layers merged, frozen)"
    else:
        use = "training" + (f", LoRA on {', '.join(lora.modules)} ({lora.origin})" if lora else "")
    kinds = sorted({c.compute for c in computes})
    compute = f", computes in {'/'.join(kinds)}" if kinds else ""
    style = model.style.describe() if model.style is not None else "prompt style from the tokenizer"
    return f"model on {device}: {loaded}, {use}{compute}; {style}"


def _where(cfg: Config | ModelConfig, device, source: str | None) -> tuple[ModelConfig, torch.device, str]:
    """The model config, the device (a full Config's run.device when none is given) and the source
    name errors cite."""
    if isinstance(cfg, Config):
        device = device if device is not None else devices.resolve_device(cfg.run.device)
        return cfg.model, torch.device(device), source or cfg.source or "<config>"
    return cfg, torch.device(device if device is not None else "cpu"), source or "<config>"


def _llm_config_and_tokenizer(cfg: ModelConfig, source: str, *, with_tokenizer: bool):
    """The LLM's HF config (Phi-2 with TinyGPT-V's q/k norms, or any causal LM's) and its tokenizer
    (None on meta)."""
    llm_config = load_llm_config(cfg.llm.family, require_file(source, "model.llm.hf_config", cfg.llm.hf_config),
                                 cfg.llm.attn_implementation)
    if not with_tokenizer:
        return llm_config, None
    tokenizer = load_tokenizer(require_file(source, "model.llm.tokenizer", cfg.llm.tokenizer))
    if len(tokenizer) > llm_config.vocab_size:
        raise ConfigError(f"{source}: tokenizer at {cfg.llm.tokenizer} has {len(tokenizer)} tokens, "
                          f"more than the LLM's vocab_size {llm_config.vocab_size}")
    return llm_config, tokenizer


def _template_from_tokenizer(cfg: ModelConfig, tokenizer) -> None:
    """`prompt_template: chat_template`: the tokenizer's own chat template for one user turn, and its
    end-of-turn marker as end_sym unless the config sets one (conversation/chat_template.py).  Left
    as it is on the meta device (no tokenizer: only parameters are counted there)."""
    if cfg.prompt_template != FROM_TOKENIZER or tokenizer is None:
        return
    template, end_sym = chat_template_style(tokenizer)
    cfg.prompt_template = template
    if cfg.end_sym is None:
        cfg.end_sym = end_sym
    log.debug("prompt template from the tokenizer's chat template: %r, end marker %r", template, cfg.end_sym)


def _instantiate(cfg: ModelConfig, llm_config, tokenizer, device: torch.device, training: bool, source: str):
    """The registered arch, created directly on `device` in the LLM's dtype; the ViT in its own.
    For inference nothing trains, so every tower takes its frozen dtype whatever the YAML trains."""
    int8 = int8_parts(cfg, device, training)
    llm_dtype, vision_dtype = storage_dtype(cfg, "llm", device, training), storage_dtype(cfg, "vision", device, training)
    from . import tinygpt_v  # noqa: F401  (registers its arch; a lower floor never imports the facade)

    # `quantize: int8`: Linears are created on meta and made real (int8 for the parts asked) one at a
    # time, so the float model never exists whole (a full-size bf16 build is 7.8 GB, its int8 form 4.3)
    with torch.device(device), _default_dtype(llm_dtype), \
            quantize.linears_on_meta() if int8 else contextlib.nullcontext():
        model = registry.get("model", cfg.arch)(cfg, llm_config, tokenizer, source)
    model.visual_encoder.to(vision_dtype)
    if "vision" in int8:  # the Q-Former's Linears are int8 with the tower's: its float rest goes with them
        quantize.image_side_to(model, vision_dtype)
    if int8:
        quantize.materialize(model)
    return model


def _prepare_for_training(model, cfg: ModelConfig) -> None:
    """Frozen ViT in half precision on accelerators (TinyGPT-V's fp16 ViT); Q-Former, ln_vision,
    projections and every trainable tensor (LoRA, norm weights) in fp32; gradient checkpointing."""
    for module in (model.ln_vision, model.qformer, model.projector):
        if module is not None:
            module.float()
    if model.query_tokens is not None:
        model.query_tokens.data = model.query_tokens.data.float()
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    # Recompute activations in the backward pass: trades ~30% more compute for activation memory
    # that no longer grows with depth (only worth it where gradients flow through the tower).
    checkpointing = {"use_reentrant": False}
    if cfg.llm.grad_checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    if cfg.vision.grad_checkpointing:
        model.visual_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)


def _norms_in_fp32(model) -> None:
    """Norm layers whole in fp32 (bias too): they compute in their weight's dtype (norms.py), and
    F.layer_norm refuses a half bias beside an fp32 weight outside autocast."""
    for module in model.modules():
        if isinstance(module, FloatCompute):
            module.float()


def resolve_prompt_style(cfg: ModelConfig, source: str, *, warn: bool,
                         read_checkpoints: bool = True) -> PromptStyle | None:
    """Fill the prompt-style fields the config leaves unset (None) in place: from the last
    `model.ckpt` file that records a style, else the protocol's defaults; say which.  With `warn`
    (inference builds), a set value that disagrees with the checkpoint's is logged as a warning
    (training stages change the template on purpose)."""
    recorded, where = {}, None
    for path in reversed(cfg.ckpt if read_checkpoints else []):
        found = weights.recorded_style(require_file(source, "model.ckpt", path))
        if found:
            recorded, where = found, path
            break
    defaults = PromptStyle()
    origins = set()
    optional = {field: PromptStyle.CONFIG_KEYS[field] for field in PromptStyle.FROM_CHECKPOINT}
    unset = [key for key in optional.values() if getattr(cfg, key) is None]
    for field, key in optional.items():
        value = getattr(cfg, key)
        if value is None:
            origins.add(where if field in recorded else "the protocol's defaults")
            setattr(cfg, key, recorded.get(field, getattr(defaults, field)))
        elif warn and field in recorded and recorded[field] != value:
            log.warning("%s: model.%s is %r but %s was trained with %r; using %r as configured",
                        source, key, value, where, recorded[field], value)
    for key, field, value in (("vision.image_size", "image_size", cfg.vision.image_size),
                              (PromptStyle.CONFIG_KEYS["image"], "image", cfg.image_placeholder)):
        if warn and field in recorded and recorded[field] != value:
            log.warning("%s: model.%s is %r but %s was trained with %r", source, key, value, where, recorded[field])
    if cfg.prompt_template == FROM_TOKENIZER:  # no tokenizer here (meta device): counted, never prompted
        log.debug("prompt style: the tokenizer's chat template (rendered when the tokenizer loads)")
        return None
    style = PromptStyle.from_config(cfg)
    told = " and ".join(sorted(origins)) or source
    if origins and len(unset) < len(optional):
        told += f" (the rest from {source})"
    log.debug("prompt style from %s: %s", told, style.describe())
    return style


def _to_inference(model) -> int:
    """Fold LoRA into the base weights (one Linear per projection instead of three matmuls) and
    freeze everything; the model is then inference-only (its trainable set no longer exists)."""
    from .lora import merge_lora

    with torch.no_grad():
        merged = merge_lora(model.llm)
    model.requires_grad_(False)
    model.eval()
    log.debug("inference model: %d LoRA layers merged, all parameters frozen", merged)
    return merged


def _load_all(model, cfg: ModelConfig, source: str) -> list:
    if cfg.qformer.weights and cfg.connector.kind != "qformer":
        raise ConfigError(f"{source}: key 'model.qformer.weights' is set but model.connector.kind is "
                          f"{cfg.connector.kind!r} (no Q-Former to load it into)")
    reports = []
    steps = (
        ("model.vision.weights", cfg.vision.weights,
         weights.load_eva_vit if cfg.vision.kind == "eva_vit_g" else weights.load_hf_vision),
        ("model.qformer.weights", cfg.qformer.weights if cfg.connector.kind == "qformer" else None,
         weights.load_blip2_qformer),
        ("model.llm.weights", cfg.llm.weights,
         weights.load_phi if cfg.llm.family == TINYGPTV_FAMILY else weights.load_hf_causal_lm),
    )
    for key, path, loader in steps:
        if path:
            reports.append(loader(model, require_file(source, key, path)))
    for i, path in enumerate(cfg.ckpt):
        reports.append(weights.load_checkpoint(model, require_file(source, f"model.ckpt[{i}]", path)))
    for report in reports:
        # A clean load is a detail (logging DEBUG / -v); ignored, initialised or kept keys are news.
        notable = report.ignored or report.initialised or report.kept or not report.ok
        log.log(logging.INFO if notable else logging.DEBUG, "%s", report.summary())
    return reports
