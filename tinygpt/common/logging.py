"""Run metrics: JSONL + CSV lines, TensorBoard scalars, and a loss-curve PNG at the end.

Only rank 0 writes.  Values arrive as Python floats: the runner converts device tensors once per
`log_every` steps, so logging never forces a host-device sync inside a training step.
"""
from __future__ import annotations

import csv
import json
import os

from . import atomic, jsonfile


class MetricsLogger:
    """`resume_step`: a resumed run replays the steps after its checkpoint, so rows logged after
    that step by the killed run are dropped first (each step is in the files once)."""

    def __init__(self, output_dir: str, tensorboard: bool = True, enabled: bool = True,
                 resume_step: int | None = None):
        self.enabled = enabled
        self.output_dir = output_dir
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
        self.csv_path = os.path.join(output_dir, "metrics.csv")
        self._writer = None
        self._csv_fields: list[str] | None = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        if resume_step is not None:
            self._truncate(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1  # TensorBoard's own replay rule
            self._writer = SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=purge)

    def _truncate(self, step: int) -> None:
        """Keep the rows of steps up to `step`; a row the killed run left half-written is dropped."""
        if os.path.exists(self.jsonl_path):
            with open(self.jsonl_path) as f:
                kept = [line for line in f if _jsonl_step(line) is not None and _jsonl_step(line) <= step]
            atomic.write_text(self.jsonl_path, "".join(kept))
        if os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as f:
                rows = list(csv.reader(f))
            if rows and "step" in rows[0]:
                column = rows[0].index("step")
                kept_rows = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[column].isdigit()
                                         and int(r[column]) <= step]
                self._csv_fields = rows[0]
                with atomic.atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
                    csv.writer(f).writerows(kept_rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **values}
        with open(self.jsonl_path, "a") as f:
            f.write(jsonfile.dumps(row) + "\n")
        new_file = not os.path.exists(self.csv_path)
        if self._csv_fields is None:
            self._csv_fields = list(row)
        elif set(row) - set(self._csv_fields):  # e.g. the first valid_loss: widen the header
            self._csv_fields += [k for k in row if k not in self._csv_fields]
            if not new_file:
                self._rewrite_csv()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._csv_fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)

    def _rewrite_csv(self) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        with atomic.atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._csv_fields)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> str | None:
        """Flush TensorBoard and draw the loss curve; returns the PNG path (None when nothing logged)."""
        if not self.enabled:
            return None
        if self._writer is not None:
            self._writer.close()
        return plot_loss_curve(self.jsonl_path, os.path.join(self.output_dir, "loss_curve.png"))


def _jsonl_step(line: str) -> int | None:
    """The step of a metrics.jsonl row, or None for a row cut short (or blank)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None


def plot_loss_curve(jsonl_path: str, png_path: str) -> str | None:
    if not os.path.exists(jsonl_path):
        return None
    steps, losses, valid = [], [], []
    with open(jsonl_path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                steps.append(row["step"])
                losses.append(row["loss"])
            if "valid_loss" in row:
                valid.append((row["step"], row["valid_loss"]))
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, label="training")
    if valid:
        ax.plot(*zip(*valid), marker="o", label="held-out")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
