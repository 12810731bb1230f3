"""Tiny TinyGPT-V models for tests: every dimension small, same code paths as full size."""
from __future__ import annotations

from pathlib import Path

import torch

from tinygpt.common.config import Config, ModelConfig
from tinygpt.models.phi import write_phi_config

TEXT = [
    "###Human: <Img><ImageHere></Img> [vqa] what colour is the circle? ###Assistant: red###",
    "[INST] <Img><ImageHere></Img> [refer] the blue square [/INST] {<10><20><30><40>}",
    "a red circle left of a green triangle. how many squares are there? 0 1 2 3 4 5 6 7 8 9",
    "[identify] [grounding] [detection] [caption] describe this image in detail.",
]


def write_tokenizer(directory: Path) -> Path:
    """A byte-level BPE with Phi-2's special token, saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(directory)
    return directory


def tiny_model_config(root: Path, lora_r: int = 4, image_size: int = 28) -> ModelConfig:
    """A ModelConfig whose towers are a few KB; writes config.json and tokenizer under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tokenizer").exists():
        write_tokenizer(root / "tokenizer")
    if not (root / "phi.json").exists():
        write_phi_config(root / "phi.json", 512, 64, 2, 4, max_positions=256)
    cfg = ModelConfig()
    cfg.vision.image_size, cfg.vision.patch_size = image_size, 14
    cfg.vision.width, cfg.vision.depth, cfg.vision.heads, cfg.vision.mlp_dim = 32, 2, 2, 64
    cfg.qformer.num_query_tokens, cfg.qformer.width, cfg.qformer.depth = 4, 32, 2
    cfg.qformer.heads, cfg.qformer.mlp_dim = 2, 64
    cfg.proj_mid_dim = 48
    cfg.llm.hf_config = str(root / "phi.json")
    cfg.llm.tokenizer = str(root / "tokenizer")
    cfg.llm.lora.r = lora_r
    cfg.max_txt_len = 32
    return cfg


def tiny_config(root: Path, **kwargs) -> Config:
    cfg = Config(model=tiny_model_config(root, **kwargs))
    cfg.run.device = "cpu"
    cfg.source = "<tiny>"
    return cfg


@torch.no_grad()
def bigram_llm(model, chain):
    """Make the LLM a bigram table: every block adds nothing, so the last hidden state is the current
    token's embedding, and lm_head maps token chain[j] to chain[j + 1]."""
    llm = model.llm
    for layer in llm.model.layers:
        for linear in (layer.self_attn.dense.base_layer, layer.self_attn.dense.lora_B["default"], layer.mlp.fc2):
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
    final = llm.model.final_layernorm
    final.weight.fill_(1.0)
    final.bias.zero_()
    table = llm.model.embed_tokens.weight
    llm.lm_head.weight.zero_()
    llm.lm_head.bias.zero_()
    for cur, nxt in zip(chain, chain[1:]):
        h = torch.nn.functional.layer_norm(table[cur], (table.shape[1],), eps=final.eps)
        llm.lm_head.weight[nxt] += 10 * h / h.norm()


def step_loss(model, samples: dict):
    """The training task's StepLoss for `samples` (the task reduces what the model computes)."""
    from tinygpt.tasks.image_text import ImageTextTask

    return ImageTextTask(Config(model=model.cfg)).train_step(model, samples)


def mean_loss(model, samples: dict) -> torch.Tensor:
    """The loss a training step minimises for this batch alone (mean over its units)."""
    step = step_loss(model, samples)
    return step.total / step.units.clamp(min=1)


def build_tiny_model(root, template=None):
    """A random tiny TinyGPT-V (seeded: every call gives the same weights) for the chat tests."""
    import tinygpt.models.tinygpt_v  # noqa: F401  (registers the architecture)
    from tinygpt.models.build import build_model

    cfg = tiny_config(root)
    if template:
        cfg.model.prompt_template, cfg.model.end_sym = template
    torch.manual_seed(0)
    model = build_model(cfg, "cpu", load_weights=False).eval()
    # A random model may open its answer with the end marker (the answer is then empty): these
    # fixtures test the plumbing, so tokens holding '#' are made unlikely.  Stopping at the marker
    # is tested with a bigram model (test_served_end_marker.py) and scripted streams.
    with torch.no_grad():
        for token, i in model.tokenizer.get_vocab().items():
            if "#" in token:
                model.llm.lm_head.bias[i] -= 100.0
    return model
