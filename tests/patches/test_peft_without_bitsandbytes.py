"""patches/peft_without_bitsandbytes.py: a tinygpt process that injects LoRA never loads bitsandbytes,
and `import bitsandbytes` (load_in_8bit) still works afterwards."""
import subprocess
import sys

CHILD = """
import sys
import torch
from tinygpt.models import lora  # noqa: F401  (the first peft import goes through the patch)
from peft import LoraConfig, inject_adapter_in_model

model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"]), torch.nn.Sequential(torch.nn.Linear(4, 4)))
assert type(model[0]).__module__ == "peft.tuners.lora.layer", type(model[0])  # LoRA went in
print("loaded after LoRA:", "bitsandbytes" in sys.modules)
import bitsandbytes
print("importable:", hasattr(bitsandbytes.nn, "Linear8bitLt"))
"""


def test_lora_injection_leaves_bitsandbytes_unloaded_and_importable():
    # A child process: this test session may have imported peft (and bitsandbytes) already.
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    assert "loaded after LoRA: False" in out, out
    assert "importable: True" in out, out
