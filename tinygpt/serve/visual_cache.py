"""Visual tokens of the images the server saw last, by content.

A chat client of the OpenAI API is stateless: every turn of a conversation sends the image again,
and each turn would encode it again (the full-size ViT-g at 448 px: 4-7 s of CPU before the first
token).  vLLM keeps encoder outputs by the hash of the image for the same reason.  The scheduler's
prefill asks this cache first: images it holds are not encoded, the others are encoded together
and kept, the least recently used leaving past `capacity` (a full-size entry is 32 x 2560 bf16
values, 164 KB).  The key is a hash of the model's input tensor (after the processor), so two
requests share an entry exactly when the model would see the same pixels.
"""
from __future__ import annotations

from typing import Callable

import torch

from .lru import LRU, digest


def image_key(image: torch.Tensor) -> bytes:
    """A digest of the tensor's shape, dtype and values."""
    data = image.detach().cpu().contiguous()
    values = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return digest(f"{tuple(data.shape)} {data.dtype}".encode(), values)


class VisualCache:
    """Visual tokens by image content, least recently used out past `capacity` (0: nothing kept)."""

    def __init__(self, capacity: int = 64):
        if capacity < 0:
            raise ValueError("the visual cache's capacity must be >= 0")
        self._entries = LRU(capacity)
        self.hits = 0  # images answered from the cache (counted once per distinct image of a call)

    def __len__(self) -> int:
        return len(self._entries)

    def encode(self, images: list[torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Visual tokens [len(images), Q, D] of `images` ([3, S, S] each, in order); `encode` gets the
        ones not held, stacked, once each."""
        digests: dict[int, bytes] = {}  # the n choices of one request share one tensor: hashed once
        keys = []
        for image in images:
            if id(image) not in digests:
                digests[id(image)] = image_key(image)
            keys.append(digests[id(image)])
        missing = {}
        for key, image in zip(keys, images):
            if key not in self._entries and key not in missing:
                missing[key] = image
        found = {key: self._entries.get(key) for key in dict.fromkeys(keys) if key in self._entries}
        self.hits += len(found)
        if missing:
            encoded = encode(torch.stack(list(missing.values())))
            found.update(zip(missing, encoded))
            for key in missing:
                self._entries.put(key, found[key])
        return torch.stack([found[key] for key in keys])
