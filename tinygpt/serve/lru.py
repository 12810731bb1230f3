"""A least-recently-used map bounded by entries and by the bytes of its tensors: what the server
keeps of the images it saw last (visual_cache.py: visual tokens, on the model thread; handoff.py:
decoded model inputs, in the worker threads -- hence the lock)."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Hashable, Optional

import torch


def digest(*parts: bytes) -> bytes:
    """A 16-byte content key (BLAKE2b) of `parts`."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.digest()


class LRU:
    """Tensors by key; past `capacity` entries or `max_bytes` (None: unbounded) the least recently
    used leave.  capacity 0 keeps nothing."""

    def __init__(self, capacity: int, max_bytes: Optional[int] = None):
        if capacity < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError("a cache's capacity and byte bound must be >= 0")
        self.capacity, self.max_bytes = capacity, max_bytes
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Optional[torch.Tensor]:
        """The value (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.numel() * old.element_size()
            if self.capacity == 0 or (self.max_bytes is not None and size > self.max_bytes):
                return
            self._entries[key] = value
            self._bytes += size
            while len(self._entries) > self.capacity or (self.max_bytes is not None and self._bytes > self.max_bytes):
                _, gone = self._entries.popitem(last=False)
                self._bytes -= gone.numel() * gone.element_size()
