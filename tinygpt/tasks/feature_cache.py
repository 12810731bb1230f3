"""Frozen-feature cache: Q-Former outputs per image, on disk, for stages whose towers do not train.

When the ViT, `ln_vision`, the Q-Former and its query tokens are frozen, an image's Q-Former output
[Q, D_qformer] is a pure function of (tower weights, tower config, the pixels, the numeric context
it was computed in).  Stages that see the same images every epoch then spend most of their step in
the 1B-parameter ViT recomputing the same numbers; this cache computes each once.

Keys (so a hit is always the number the uncached path would compute):
  * tower key  = blake2b over the vision/Q-Former config (architecture fields) and every tensor of
                 the frozen towers (name, dtype, shape, bytes) -> directory `<root>/<tower key>/`.
                 Loading other weights (or a different image size, depth, ...) gives a new key:
                 old entries are never read again (invalidation by construction; delete freely).
  * context    = device type, autocast dtype, torch version -> a sub-directory: features computed
                 under bf16 autocast on an accelerator are not served to an fp32 CPU run.
  * image key  = blake2b over the *transformed* pixel tensor (dtype, shape, bytes).  Keying on the
                 pixels rather than an image ID makes a random training transform safe (it simply
                 never hits); the cache pays off when the transform is deterministic
                 (`blip2_image_train` and `blip2_image_eval` resize; `lavis_blip2_image_train`
                 crops unless `min_scale: 1.0`).
Entries are written to a temporary file and renamed (several ranks may fill one cache).

When (`model.feature_cache`, `cache_directory`):
  * "auto" (the default): on, in `<parent of run.output_dir>/feature_cache`, only where it is exact
    AND pays: every tower frozen and every dataset's image transform deterministic (the
    processor's `keeps_whole_image`); otherwise, or with no `datasets:`, off.  A log line says
    which and why.  Stages with the same towers share entries (the tiny recipe's stage 4 reads
    what stage 3 wrote).
  * a directory: on, there (frozen towers required; with a random transform it is still exact,
    it just never hits);
  * null: off.
An in-process table in front of the files serves repeated images without reading them again.

Use: the task (tasks/image_text.py) builds one after the weights are loaded, and hands the model
`samples["query_features"]` instead of the images.
Only training and validation steps use it (generation and the evaluators encode images directly).
This module is the one home of that cache; model files hold no paths or file I/O.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from ..common.atomic import atomic_path, remove_stale_temps
from ..common.config import Config, ConfigError
from ..models import components

log = logging.getLogger(__name__)

AUTO = "auto"
# The in-process table's budget: 4,000 tiny-recipe images are ~35 MB, a full-size [32, 768] entry 96 KB.
MEMORY_BYTES = 512 * 2**20
STALE_TEMP_S = 600  # a cache temp file untouched this long was left by a killed writer

# Fields that do not change what the towers compute (where weights came from, training flags).
_IGNORED_FIELDS = {"weights", "train", "grad_checkpointing", "dtype"}


def _hash_tensor(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tower_key(model) -> str:
    """Hex digest of the frozen towers' architecture and weights (the actual tensors, dtype
    included: the config's `dtype: auto` is resolved per device, the tensors say what ran).
    The towers are the model's tower components (models/components.py)."""
    h = hashlib.blake2b(digest_size=20)
    arch = {
        "vision": {k: v for k, v in asdict(model.cfg.vision).items() if k not in _IGNORED_FIELDS},
        "qformer": {k: v for k, v in asdict(model.cfg.qformer).items() if k not in _IGNORED_FIELDS},
    }
    h.update(json.dumps(arch, sort_keys=True).encode())
    for name, t in components.tower_tensors(model):
        _hash_tensor(h, name, t)
    return h.hexdigest()


def image_key(image: torch.Tensor) -> str:
    """Hex digest of one transformed image [3, S, S]."""
    h = hashlib.blake2b(digest_size=20)
    _hash_tensor(h, "image", image)
    return h.hexdigest()


def _context(device: torch.device) -> str:
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    amp = str(amp).replace("torch.", "") if amp is not None else "noamp"
    return f"{device.type}-{amp}-torch{torch.__version__.split('+')[0]}"


def _trainable_towers(model) -> list[str]:
    return [c.attribute for c in components.present(model) if c.tower and c.trainable(model.cfg)]


def cache_directory(cfg: Config, model) -> Optional[str]:
    """Where this run's cache lives (None: no cache), from `model.feature_cache`; "auto" decides
    and logs why.  An explicit directory with trainable towers is a ConfigError."""
    setting = cfg.model.feature_cache
    if setting is None:
        return None
    if setting != AUTO:
        return setting  # FeatureCache refuses trainable towers
    trainable = _trainable_towers(model)
    random_transforms = [f"{section}.{name}" for section, entries in (("datasets", cfg.datasets),
                                                                    ("valid_datasets", cfg.valid_datasets))
                         for name, dcfg in entries.items() if not _deterministic(dcfg.vis_processor)]
    if trainable or random_transforms or not cfg.datasets:
        why = (f"towers train ({', '.join(trainable)})" if trainable else
               f"random image transforms in {', '.join(random_transforms)} would never hit" if random_transforms
               else "no datasets configured")
        log.info("model.feature_cache auto: off (%s)", why)
        return None
    directory = os.path.join(os.path.dirname(os.path.normpath(cfg.run.output_dir)), "feature_cache")
    log.info("model.feature_cache auto: on, %s (frozen towers, deterministic image transforms; "
             "`model.feature_cache: null` turns it off)", directory)
    return directory


def _deterministic(processor_cfg) -> bool:
    from ..processors.build import build_processor

    return bool(getattr(build_processor(processor_cfg), "keeps_whole_image", False))


class FeatureCache:
    """Callable: images [B, 3, S, S] -> Q-Former outputs [B, Q, D_qformer], computing only misses."""

    def __init__(self, model, directory: str | os.PathLike):
        if _trainable_towers(model):
            raise ConfigError("model.feature_cache needs frozen vision and Q-Former towers "
                             "(model.vision.train and model.qformer.train false)")
        self.key = tower_key(model)
        self.root = Path(directory) / self.key
        # Features written by a process that was killed mid-write; other ranks (or runs) may be
        # writing now, so only files untouched for a while count (one write takes milliseconds).
        for stale in remove_stale_temps(str(self.root), recursive=True, older_than_s=STALE_TEMP_S):
            log.info("removed %s, left by a feature-cache write that was interrupted", stale)
        self.hits = 0
        self.misses = 0
        self._memory: dict[Path, torch.Tensor] = {}
        self._memory_bytes = 0

    def _path(self, context: str, key: str) -> Path:
        return self.root / context / key[:2] / f"{key}.pt"

    def _load(self, path: Path) -> torch.Tensor | None:
        found = self._memory.get(path)
        if found is not None:
            return found
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # torn by a killed writer, or overwritten: torch raises many types
            log.warning("feature cache: %s is unreadable (%s); recomputing it", path, type(exc).__name__)
            return None
        # One entry is Q-Former outputs [Q, D] of one image: anything else is not ours to use.
        if not (torch.is_tensor(found) and found.dim() == 2 and found.is_floating_point()
                and bool(torch.isfinite(found).all())):
            log.warning("feature cache: %s does not hold finite [Q, D] features; recomputing it", path)
            return None
        self._remember(path, found)
        return found

    def _store(self, path: Path, features: torch.Tensor) -> None:
        features = features.detach().to("cpu").clone()  # clone: not the whole batch storage
        with atomic_path(str(path), ".pt") as tmp:
            torch.save(features, tmp)
        self._remember(path, features)

    def _remember(self, path: Path, features: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if self._memory_bytes + size <= MEMORY_BYTES:
            self._memory[path] = features
            self._memory_bytes += size

    def __call__(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`compute` is the uncached path (`TinyGPTV.query_features`), run on the misses only."""
        context = _context(images.device)
        paths = [self._path(context, image_key(img)) for img in images]
        found = [self._load(p) for p in paths]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            index = torch.tensor(missing, device=images.device)
            with torch.no_grad():
                computed = compute(images.index_select(0, index))
            for row, i in enumerate(missing):
                self._store(paths[i], computed[row])
                found[i] = computed[row].detach()
        self.misses += len(missing)
        self.hits += len(found) - len(missing)
        return torch.stack([f.to(images.device) for f in found])
