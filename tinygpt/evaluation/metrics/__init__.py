"""What the benchmark modules (`evaluation/benchmarks/`) share: the Scorer base and its rounding,
ranking metrics (AP, AUROC, F1), the official VQA answer normalisation, TinyGPT-V's answer cleaning
for compat rows, and the markdown table.  No model and no torch here.
"""
