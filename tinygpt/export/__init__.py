"""`python -m tinygpt.export`: a trained model in the format another program loads, one module per
target, each with its own parity check:

* `--format safetensors` (directory.py): tinygpt's own self-contained directory
  (`tinygpt.from_pretrained`, `demo.py --model`, `evaluate.py --model`), LoRA merged or kept;
* `--format onnx` (onnx_graphs.py): graphs for onnxruntime (tinygpt/onnx_runtime.py, no torch);
* `--format hf` (hf.py): a directory stock transformers loads, for the most widely loadable target
  the model's parts allow (targets.py: LlavaForConditionalGeneration, Blip2ForConditionalGeneration,
  or TinyGPT-V's own classes as trust_remote_code), verified in a process without tinygpt (verify.py);
  `python -m tinygpt.export.stock_eval` scores such a directory on a held-out benchmark through plain
  transformers.  docs/export.md: the targets, the checks, and serving with other engines.
"""
from .cli import main
from .directory import export, load_exported_config, model_card
from .onnx_graphs import export_onnx

__all__ = ["export", "export_onnx", "load_exported_config", "main", "model_card"]
