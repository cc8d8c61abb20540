"""Language-model batches from one long stream of token ids, for truncated BPTT.

The stream of N ids is cut into B rows of equal length (the tail that does not fit is
dropped) and read left to right in windows of `bptt` steps. Row b of window k+1 continues row b
of window k, so the hidden state at the end of one batch is the right initial state for the
next: carry it over (detached) and gradients flow through at most `bptt` steps.

    ids      a b c d e f g h i j k l m      (N = 13, B = 2: rows of n = (N - 1) // B = 6)
    inputs   a b c d e f      targets  b c d e f g
             g h i j k l               h i j k l m

Padding-based batching of separate sequences lives in `rnnkit.data.batching`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from rnnkit.data.batch import Batch


class StreamBatches:
    """Contiguous (B, T) input/target windows over one token stream, T <= `bptt`.

    Each `Batch` has inputs (B, T) int64, targets (B, T) = the next tokens, lengths (B,) = T.
    """

    def __init__(self, ids: Sequence[int] | torch.Tensor, batch_size: int, bptt: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
        steps = (len(ids) - 1) // batch_size  # per row; each input needs the next id as target
        if steps < 1:
            raise ValueError(
                f"a stream of {len(ids)} tokens is too short for batch_size={batch_size}: "
                f"it needs at least {batch_size + 1}; use a smaller batch_size or more text"
            )
        self.batch_size = batch_size
        self.bptt = bptt  # steps of backpropagation through time per batch
        self.inputs = ids[: steps * batch_size].view(batch_size, steps)  # (B, n)
        self.targets = ids[1 : steps * batch_size + 1].view(batch_size, steps)  # (B, n)

    @property
    def steps_per_row(self) -> int:
        """n: the time steps each row holds over a whole epoch."""
        return self.inputs.shape[1]

    def __len__(self) -> int:
        return -(-self.steps_per_row // self.bptt)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, self.steps_per_row, self.bptt):
            inputs = self.inputs[:, start : start + self.bptt]  # (B, T)
            targets = self.targets[:, start : start + self.bptt]  # (B, T)
            lengths = torch.full((self.batch_size,), inputs.shape[1], dtype=torch.int64)
            yield Batch(inputs=inputs, lengths=lengths, targets=targets)
