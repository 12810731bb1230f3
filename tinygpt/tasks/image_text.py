"""The one home of training policy: the model computes per-sample numbers, the task turns them into
the loss a step minimises, and the runner schedules steps.

  * loss reduction (`model.loss_reduction`): "token" (every answer token of the global batch
    weighs the same: TinyGPT-V, MiniGPT-4, LLaVA) or "sample" (each sample's token mean, then the
    mean over samples);
  * auxiliary losses the model reports (`aux`), added with their configured weights
    (`cell`: `model.qformer.cell_loss_weight`);
  * the frozen-feature cache (`model.feature_cache`, feature_cache.py; "auto": where exact): Q-Former
    outputs of frozen towers read back instead of recomputed;
  * sequence packing (`run.pack_length`, conversation/packing.py): several samples per row;
  * a training step and a validation step (`run.valid_every`, on `valid_datasets:`).
Every TinyGPT-V stage is this one task with a different YAML.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common import dist
from ..common.config import Config
from ..common.registry import registry
from ..datasets.loader import build_train_loader, build_valid_loader
from .feature_cache import FeatureCache, cache_directory


@dataclass
class StepLoss:
    """One micro-batch's loss, in the units the runner normalises gradients by.

    `total` = mean loss x `units`: summed over micro-batches and ranks and divided by the summed
    units, it is the mean over the global batch (so accumulation and data parallelism give the
    single-batch gradient).  `answer_tokens` is for throughput logging only."""
    total: torch.Tensor
    units: torch.Tensor
    answer_tokens: torch.Tensor


@registry.register("task", "image_text_pretrain")
class ImageTextTask:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.reduction = cfg.model.loss_reduction
        self.aux_weights = {"cell": cfg.model.qformer.cell_loss_weight}
        self.feature_cache: FeatureCache | None = None

    def setup(self, model) -> None:
        """Called once the weights are loaded (the cache key hashes the towers as they are now)."""
        directory = cache_directory(self.cfg, model)
        if directory:
            self.feature_cache = FeatureCache(model, directory)

    def build_train_loader(self, info, device: torch.device):
        """Endless batches from every entry under `datasets:`, mixed by sample_ratio (resumable)."""
        return build_train_loader(self.cfg, rank=info.rank, world_size=info.world_size, device=device)

    def build_valid_loader(self, info, device: torch.device):
        """One pass over every entry under `valid_datasets:` (None when there are none)."""
        return build_valid_loader(self.cfg, rank=info.rank, world_size=info.world_size, device=device)

    def train_step(self, model, samples: dict) -> StepLoss:
        return self.reduce(model(self._inputs(model, samples), pack_length=self.cfg.run.pack_length))

    @torch.no_grad()
    def valid_step(self, model, samples: dict) -> StepLoss:
        return self.reduce(model(self._inputs(model, samples), pack_length=self.cfg.run.pack_length))

    def reduce(self, out: dict) -> StepLoss:
        """The model's {"answer_nll": [B], "answer_tokens": [B], "aux": {...}} -> StepLoss."""
        nll, count = out["answer_nll"], out["answer_tokens"]
        if self.reduction == "sample":
            answered = count > 0
            units = answered.sum()
            loss = (nll[answered] / count[answered]).sum() / units.clamp(min=1)
        else:
            units = count.sum()
            loss = nll.sum() / units.clamp(min=1)
        for name, value in out["aux"].items():
            loss = loss + self.aux_weights[name] * value
        return StepLoss(total=loss * units, units=units, answer_tokens=count.sum())

    def _inputs(self, model, samples: dict) -> dict:
        """The batch the model sees: with the feature cache, Q-Former outputs instead of images."""
        if self.feature_cache is None or "image" not in samples:
            return samples
        inner = dist.unwrap(model)  # frozen towers are never sharded or wrapped (common/dist.py)
        features = self.feature_cache(samples["image"], inner.query_features)
        return {**{k: v for k, v in samples.items() if k != "image"}, "query_features": features}
