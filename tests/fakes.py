"""A deterministic in-memory dataset for runner tests (registered as the builder "fake_vqa")."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from tinygpt.common.config import DatasetConfig
from tinygpt.common.registry import registry

ANSWERS = ["red", "a blue square", "2", "the green circle on the left", "yes"]


class FakeVQA(Dataset):
    def __init__(self, size: int = 64, image_size: int = 28):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(size, 3, image_size, image_size, generator=g)
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "instruction_input": f"<Img><ImageHere></Img> [vqa] question {i % 7}?",
            "answer": ANSWERS[i % len(ANSWERS)],
            # per-cell classes for models with a Q-Former cell head (tiny test models have 4 queries)
            "cell_labels": torch.tensor([i % 3, (i + 1) % 5, 0, i % 2]),
        }


@registry.register("dataset", "fake_vqa")
class FakeVQABuilder:
    def __init__(self, cfg: DatasetConfig, name: str = "fake_vqa", seed: int = 0):
        self.cfg = cfg

    def build(self):
        return FakeVQA(image_size=self.cfg.vis_processor.image_size)


def fake_dataset_config(image_size: int = 28) -> DatasetConfig:
    ds = DatasetConfig(builder="fake_vqa")
    ds.vis_processor.image_size = image_size
    return ds
