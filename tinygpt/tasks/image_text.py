"""The task computes; the runner schedules.  A task builds the data its config names and turns a
batch into a loss; every TinyGPT-V stage is this one task with a different YAML."""
from __future__ import annotations

import torch

from ..common.config import Config
from ..common.registry import registry
from ..datasets.loader import build_train_loader


@registry.register("task", "image_text_pretrain")
class ImageTextTask:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def build_train_loader(self, info, device: torch.device):
        """Endless batches from every entry under `datasets:`, mixed by sample_ratio (resumable)."""
        return build_train_loader(self.cfg, rank=info.rank, world_size=info.world_size, device=device)

    def train_step(self, model, samples: dict) -> dict[str, torch.Tensor]:
        """{"loss": mean answer NLL, "n_tokens": answer tokens, "weight": what the mean is over}."""
        return model(samples)
