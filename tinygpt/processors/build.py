"""ProcessorConfig -> processor object, through the registry (the YAML names the class)."""
from __future__ import annotations

from tinygpt.common.config import ProcessorConfig, image_statistics
from tinygpt.common.registry import registry


def build_processor(cfg: ProcessorConfig):
    """Instantiate the processor `cfg.name` names; unknown names list the registered ones."""
    # Importing here (not at module top) keeps `build` importable from the processor modules.
    import tinygpt.processors  # noqa: F401  (registers the built-in processors)

    return registry.get("processor", cfg.name).from_config(cfg)


def eval_processor(model_cfg):
    """The one inference transform (chat, API, evaluation): BLIP-2's eval transform at the model's
    input size and its tower's image statistics -- a whole-image resize, no random crop."""
    return build_processor(ProcessorConfig(name="blip2_image_eval", image_size=model_cfg.vision.image_size,
                                           normalization=image_statistics(model_cfg.vision)))
