"""Which Hugging Face target a model's parts allow (`--format hf`), and why; or which part no target
holds.  The most widely loadable target wins:

1. `llava`: a CLIP / SigLIP tower, LLaVA's `mlp` connector (mlp2x_gelu) and a stock causal LM whose
   head has no bias -> LlavaForConditionalGeneration (vLLM, SGLang, LMDeploy, TGI, llama.cpp's converter).
2. `blip2`: EVA ViT-g + `ln_vision` + the Q-Former connector and a stock causal LM ->
   Blip2ForConditionalGeneration (vLLM); the projector's two linear layers fold into its one
   `language_projection`.
3. `remote-code`: EVA ViT-g + the Q-Former connector + TinyGPT-V's Phi-2 (`family: tinygptv_phi`, whose
   q/k LayerNorm and post-norm no stock class has) -> a trust_remote_code directory
   (models/hf_tinygptv.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..common.config import ModelConfig
from ..common.errors import UserError
from ..models.llm import TINYGPTV_FAMILY

LLAVA, BLIP2, REMOTE = "llava", "blip2", "remote-code"


class ExportError(UserError):
    """The model has a part no export target can hold, or an export could not be proven."""


@dataclass(frozen=True)
class Target:
    name: str    # LLAVA | BLIP2 | REMOTE
    reason: str  # one sentence: the parts that decided it


def choose_target(model: ModelConfig, llm, source: str = "<config>") -> Target:
    """The target for a model of config `model` whose built LLM is `llm` (its config and head are read);
    an ExportError naming the config key of the part that no target holds."""
    vision, connector, family = model.vision.kind, model.connector.kind, model.llm.family
    stock = family != TINYGPTV_FAMILY
    lm = f"a stock {llm.config.model_type} causal LM" if stock else "TinyGPT-V's Phi-2 (q/k LayerNorm, post-norm)"

    def refuse(key: str, why: str):
        raise ExportError(f"{source}: key 'model.{key}': {why}; no --format hf target holds it "
                          f"(--format safetensors or onnx export any model)")

    if connector not in ("qformer", "mlp"):
        refuse("connector.kind", f"the {connector!r} connector is in neither LLaVA (mlp2x_gelu) nor BLIP-2 "
                                 "(Q-Former + one linear)")
    if connector == "mlp":
        if vision not in ("clip", "siglip"):
            refuse("vision.kind", f"LLaVA's mlp connector on a {vision!r} tower: LlavaForConditionalGeneration "
                                  "takes a CLIP or SigLIP tower")
        if model.vision.ln_vision:
            refuse("vision.ln_vision", "a LayerNorm between the tower and LLaVA's projector")
        if not stock:
            refuse("llm.family", f"{lm} in a LLaVA layout (the remote-code target holds it with EVA + Q-Former only)")
        if llm.get_output_embeddings().bias is not None:
            refuse("llm.hf_config", f"the {llm.config.model_type} LM's head has a bias; "
                                    "LlavaForConditionalGeneration's has none")
        return Target(LLAVA, f"a {vision} tower, LLaVA's mlp2x_gelu connector and {lm}: "
                             "LlavaForConditionalGeneration, which vLLM, SGLang, LMDeploy, TGI and llama.cpp load")
    if vision != "eva_vit_g":
        refuse("vision.kind", f"the Q-Former connector on a {vision!r} tower (BLIP-2 and TinyGPT-V read EVA ViT-g)")
    if model.vision.feature_layer != -1 or not model.vision.keep_cls:
        refuse("vision.feature_layer", "the Q-Former reads other features than the tower's last block with its "
                                       "CLS token, as BLIP-2 reads them")
    if stock:
        if not model.vision.ln_vision:
            refuse("vision.ln_vision", "Blip2ForConditionalGeneration always applies BLIP-2's ln_vision")
        return Target(BLIP2, f"EVA ViT-g, the Q-Former and {lm}: Blip2ForConditionalGeneration, which vLLM loads "
                             "(the two linear projections fold exactly into its language_projection)")
    return Target(REMOTE, f"EVA ViT-g, the Q-Former and {lm}, which no stock transformers class has: a "
                          "trust_remote_code directory shipping tinygpt's own model source")
