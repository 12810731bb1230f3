"""Sequence packing: the one home of how several training layouts share a row instead of each
being padded to the batch's longest (torch-free: a packed batch is lists of ints; the model turns
it into tensors, models/packed.py).

    layouts (protocol.encode) --pack_rows(rows, pad_id, capacity)--> PackedRows
        row r = sample a | sample b | ... | pads          (at most `capacity` tokens, unless one
                                                           sample alone is longer)
        positions    0 1 2 .. 0 1 2 3 ..  ..  n n+1 ..    restart at each sample's first token
        segments     a a a .. b b b b ..  ..  z z   ..    the sample each token belongs to

Exactness: a token may attend only to earlier tokens of its own segment whose attention is 1
(block-diagonal causal), and its position id is its index inside its sample.  That is exactly what
it sees in its own right-padded row -- same keys, same rotary angles -- so every sample's answer NLL
is the unpacked one (tests/perf/test_packing.py checks losses and gradients).  Trailing pads join the
row's last segment with attention 0 and no label, as right padding does: real tokens never see
them and no query is left with nothing to attend to.

Placement is first-fit in decreasing length (stable, so deterministic); with capacity 0 every
sample gets its own row, which is the right-padded layout of `protocol.pad_rows`.  A dense
attention mask costs capacity^2 per row, so the capacity is the user's trade between padding saved
and attention spent (`run.pack_length`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .protocol import IGNORE, Layout


@dataclass
class PackedRows:
    """Rows of equal width.  `image_at[i]` = (row, column) of sample i's first visual slot, or
    (-1, -1) when it has none; `segments` hold sample indices into the `rows` given to pack_rows."""

    ids: list[list[int]]
    labels: list[list[int]]
    attention: list[list[int]]
    positions: list[list[int]]
    segments: list[list[int]]
    image_at: list[tuple[int, int]]

    @property
    def one_per_row(self) -> bool:
        """Every row holds a single sample (the plain right-padded layout)."""
        return all(row[0] == row[-1] for row in self.segments)


def place(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sample indices per row: first fit in decreasing length; capacity <= 0 = one sample per row."""
    if capacity <= 0:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def pack_rows(rows: Sequence[Layout], pad_id: int, capacity: int) -> PackedRows:
    """Training layouts (right-padded order: no generation prompts) packed into rows of at most
    `capacity` tokens (<= 0: one per row)."""
    placement = place([len(r) for r in rows], capacity)
    width = max(sum(len(rows[i]) for i in row) for row in placement)
    out = PackedRows([], [], [], [], [], [(-1, -1)] * len(rows))
    for r, members in enumerate(placement):
        ids, labels, attention, positions, segments = [], [], [], [], []
        for i in members:
            layout = rows[i]
            if layout.image_at >= 0:
                out.image_at[i] = (r, len(ids) + layout.image_at)
            ids += layout.ids
            labels += layout.labels
            attention += layout.attention
            positions += range(len(layout))
            segments += [i] * len(layout)
        fill = width - len(ids)
        out.ids.append(ids + [pad_id] * fill)
        out.labels.append(labels + [IGNORE] * fill)
        out.attention.append(attention + [0] * fill)
        out.positions.append(positions + list(range(positions[-1] + 1, positions[-1] + 1 + fill)))
        out.segments.append(segments + [members[-1]] * fill)
    return out
