"""peft (0.21) imports bitsandbytes as soon as it is imported (`peft/helpers.py`) and again whenever
it injects LoRA (`peft.import_utils.is_bnb_4bit_available`, for its quantized-layer dispatchers);
bitsandbytes then loads its CPU backend and parts of torch._inductor: about 50 MB of resident
memory in every tinygpt process, a measurable share of the int8 build's < 5 GB budget
(docs/quantization.md).  tinygpt never hands peft a bitsandbytes layer: `load_in_8bit` merges LoRA
into float Linears first and swaps in `Linear8bitLt` itself (models/quantize.py), and a training
build refuses 8-bit weights.  So peft is told that bitsandbytes is absent: it is imported, and its
two cached availability checks answered, while `sys.modules["bitsandbytes"]` is None (what Python's
import system reads as "not installed"); the entry is then removed, so `import bitsandbytes` works
as usual for `load_in_8bit`.  Apply before peft is first imported (models/lora.py does); if peft is
already imported, nothing changes."""
from __future__ import annotations

import sys

BITSANDBYTES = "bitsandbytes"


def apply() -> bool:
    """Import peft with bitsandbytes hidden.  True if peft now believes bitsandbytes is absent."""
    if "peft" in sys.modules or BITSANDBYTES in sys.modules:
        return False  # too late (peft saw it), or bitsandbytes is already loaded: nothing to save
    sys.modules[BITSANDBYTES] = None
    try:
        import peft  # noqa: F401
        from peft.import_utils import is_bnb_4bit_available, is_bnb_available

        hidden = not is_bnb_available() and not is_bnb_4bit_available()  # lru_cached: False from now on
    finally:
        del sys.modules[BITSANDBYTES]
    return hidden


apply()
