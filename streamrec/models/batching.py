"""Turning variable-length index sequences into padded tensors and training batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["left_pad", "seen_matrix", "training_batches"]


def left_pad(sequences: Sequence[Sequence[int] | np.ndarray], max_len: int) -> torch.Tensor:
    """``[batch, L]`` int64, the newest ``max_len`` items of each sequence right-aligned,
    ``L`` = the longest kept length in the batch (at least 1)."""
    width = max(1, min(max_len, max((len(seq) for seq in sequences), default=1)))
    padded = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq[-width:] if len(seq) else [], dtype=np.int64)
        if tail.size:
            padded[row, width - tail.size :] = tail
    return torch.from_numpy(padded)


def seen_matrix(sequences: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
    """``[batch, n_seen]`` int64 of every item in each sequence, 0-padded (for masking)."""
    return left_pad(sequences, max_len=max((len(seq) for seq in sequences), default=1))


def training_batches(
    sequences: Sequence[np.ndarray],
    batch_size: int,
    max_len: int,
    rng: np.random.Generator,
    bucket_batches: int = 50,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled ``(inputs, targets)`` pairs, each ``[batch, L]``, left-padded.

    Every position of a sequence is trained (causal LM): input ``seq[:-1]``, target ``seq[1:]``,
    both cut to the newest ``max_len``. Users are shuffled, then grouped ``bucket_batches``
    batches at a time and sorted by length inside a group, so batches carry little padding
    while their order stays random.
    """
    usable = [index for index, seq in enumerate(sequences) if len(seq) >= 2]
    order = rng.permutation(np.asarray(usable, dtype=np.int64))
    lengths = np.array([min(len(sequences[index]) - 1, max_len) for index in order])
    group = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), group):
        members = order[start : start + group]
        members = members[np.argsort(lengths[start : start + group], kind="stable")]
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    for batch_index in rng.permutation(len(batches)):
        chosen = [sequences[index] for index in batches[batch_index]]
        yield (
            left_pad([seq[:-1] for seq in chosen], max_len),
            left_pad([seq[1:] for seq in chosen], max_len),
        )
