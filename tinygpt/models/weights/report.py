"""What a weight load did, key by key, and the error raised when it cannot be done exactly."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...common.errors import UserError

_SHOW = 12  # keys quoted per list in messages; the full lists stay on the report


def _quote(keys, limit: int = _SHOW) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class LoadReport:
    """One file loaded into the model.

    Every key the file holds ends up in exactly one of `consumed` (it fed a parameter in `loaded`),
    `ignored` (known and deliberately unused, with the reason) or `unexpected` (an error).
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)  # our parameter names that received values
    consumed: list[str] = field(default_factory=list)  # the file's keys those values came from
    ignored: dict[str, str] = field(default_factory=dict)  # file key -> why it is not used
    missing: list[str] = field(default_factory=list)  # our names the file should have provided
    initialised: list[str] = field(default_factory=list)  # our names set to a fixed start (Phi q/k/post norms)
    shape_errors: list[str] = field(default_factory=list)  # "name: file [..] -> model [..]"
    dtype_errors: list[str] = field(default_factory=list)  # "name: file key int32, model float32"
    unexpected: list[str] = field(default_factory=list)  # file keys that map to nothing in this model
    kept: list[str] = field(default_factory=list)  # trainable groups the file does not touch

    @property
    def ok(self) -> bool:
        return not (self.missing or self.shape_errors or self.dtype_errors or self.unexpected)

    def summary(self) -> str:
        parts = [f"{self.source} [{self.format}]: loaded {len(self.loaded)} tensors from {len(self.consumed)} keys"]
        if self.ignored:
            reasons = Counter(self.ignored.values())
            parts.append("ignored " + "; ".join(f"{n} x {why}" for why, n in reasons.items()))
        if self.initialised:
            parts.append(f"initialised {len(self.initialised)} (absent from the file): {_quote(self.initialised, 4)}")
        if self.kept:
            parts.append("kept at initialisation (not in the file): " + ", ".join(self.kept))
        if self.missing:
            parts.append(f"MISSING {len(self.missing)}: {_quote(self.missing)}")
        if self.unexpected:
            parts.append(f"UNEXPECTED {len(self.unexpected)}: {_quote(self.unexpected)}")
        if self.shape_errors:
            parts.append(f"SHAPE ERRORS {len(self.shape_errors)}: {_quote(self.shape_errors, 6)}")
        if self.dtype_errors:
            parts.append(f"DTYPE ERRORS {len(self.dtype_errors)}: {_quote(self.dtype_errors, 6)}")
        return "; ".join(parts) + "."


class WeightLoadError(UserError):
    """A weight file cannot be loaded exactly.  The message names the file and the keys; the model
    is left untouched (every check runs before the first copy)."""

    def __init__(self, message: str, report: LoadReport | None = None):
        super().__init__(message)
        self.report = report

    @classmethod
    def from_report(cls, report: LoadReport) -> "WeightLoadError":
        lines = [f"cannot load {report.source} ({report.format}) into this model:"]
        if report.shape_errors:
            lines.append(f"  shape mismatch: {_quote(report.shape_errors, 6)}")
        if report.dtype_errors:
            lines.append(f"  dtype mismatch: {_quote(report.dtype_errors, 6)}")
        if report.missing:
            lines.append(f"  missing from the file: {_quote(report.missing)}")
        if report.unexpected:
            lines.append(f"  keys this model has no place for: {_quote(report.unexpected)}")
        return cls("\n".join(lines), report)
