"""`MusicModel`: polyphonic music as a sequence of multi-hot piano-roll frames.

Each frame x_t in {0, 1}^P marks the P = 88 piano keys sounding at step t. The model reads the
frames up to t - 1 and gives every key an independent Bernoulli probability for frame t:

    h_t = RNN(x_{t-1}, h_{t-1})          x_0 = 0 (silence: the start of a piece)
    p_t = sigmoid(W h_t + b)             (P,) one probability per key
    NLL = -sum_p [x_tp log p_tp + (1 - x_tp) log(1 - p_tp)]     per frame, summed over keys

The loss is that NLL averaged over the true frames of the batch (padding past `lengths` is not
counted), the figure Boulanger-Lewandowski et al. (2012) report for JSB chorales. The batch
holds inputs (B, T, P) = the frames shifted right by one with a silent first frame, targets
(B, T, P) = the frames, lengths (B,); `rnnkit.tasks.lm` builds it from piano rolls.

`generate` samples frames one step at a time through the recurrent layer's `step()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice, check_counts, check_rates
from rnnkit.models.encoder import CELLS
from rnnkit.models.sampling import sample_bernoulli


@dataclass(frozen=True)
class MusicModelConfig:
    """Hyper-parameters of a `MusicModel`."""

    num_pitches: int = 88  # P: keys per frame (88: MIDI pitches 21-108)
    hidden_size: int = 256  # H: recurrent state size
    num_layers: int = 1  # stacked recurrent layers
    cell: str = "lstm"  # "lstm", "gru" or "rnn"
    dropout: float = 0.0  # on the inputs, between layers and on the RNN's outputs, in training

    def __post_init__(self) -> None:
        check_counts(self, "num_pitches", "hidden_size", "num_layers")
        check_choice("cell", self.cell, CELLS)
        check_rates(self, "dropout")


class MusicModel(nn.Module):
    """An RNN over piano-roll frames with one sigmoid output per key.

    Shapes: frames (B, T, P) float; logits (B, T, P); state in torch.nn's layout
    (num_layers, B, H) (LSTM: a pair (h, c)); None starts from zeros.
    """

    def __init__(self, config: MusicModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.rnn = CELLS[c.cell](
            c.num_pitches,
            c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(c.dropout)
        self.output = nn.Linear(c.hidden_size, c.num_pitches)

    def forward(
        self, frames: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """Logits (B, T, P) of the frame after each input frame, and the final state."""
        hidden, state = self.rnn(self.dropout(frames), state, lengths=lengths)  # (B, T, H)
        return self.output(self.dropout(hidden)), state

    def step(self, frame: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One frame per row (B, P) -> (logits (B, P) of the next frame, new state)."""
        hidden, state = self.rnn.step(self.dropout(frame), state)  # (B, H)
        return self.output(self.dropout(hidden)), state

    def frame_nll(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(summed NLL over all true frames, number of true frames) of the batch."""
        logits, _ = self(batch.inputs, batch.lengths)  # (B, T, P)
        targets = batch.targets.to(logits.dtype)
        nll = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
        steps = torch.arange(nll.shape[1], device=nll.device)  # (T,)
        if batch.lengths is None:
            valid = torch.ones_like(nll, dtype=torch.bool)
        else:
            valid = steps[None, :] < batch.lengths.to(nll.device)[:, None]  # (B, T)
        return nll.masked_fill(~valid, 0.0).sum(), valid.sum()

    def loss(self, batch: Batch) -> Tensor:
        """NLL per frame: the summed Bernoulli NLL over keys, mean over the true frames."""
        total, frames = self.frame_nll(batch)
        return total / frames

    def loss_weight(self, batch: Batch) -> int:
        """The true frames `loss` averages over (`rnnkit.train.evaluate` weights by them)."""
        if batch.lengths is None:
            return batch.targets.shape[0] * batch.targets.shape[1]
        return int(batch.lengths.sum())

    def predict(self, batch: Batch) -> Tensor:
        """The probability (B, T, P) of each key sounding in the frame after each input."""
        logits, _ = self(batch.inputs, batch.lengths)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def generate(
        self, prompt: Tensor | None, temperature: float, generator: torch.Generator
    ) -> Iterator[Tensor]:
        """Frames (P,) of 0s and 1s sampled one at a time after `prompt` (T, P), without end.

        The model starts from a silent frame, then reads the prompt's frames (if any) in one
        `forward`; every sampled frame costs one `step`. Put the model in eval mode first.
        """
        device, dtype = self.output.weight.device, self.output.weight.dtype
        start = torch.zeros(1, 1, self.config.num_pitches, device=device, dtype=dtype)  # x_0
        if prompt is not None:
            start = torch.cat([start, prompt.to(device, dtype)[None]], dim=1)
        logits, state = self(start)
        next_logits = logits[:, -1]  # (1, P)
        while True:
            frame = sample_bernoulli(next_logits.cpu(), temperature, generator)  # (1, P)
            yield frame[0]
            next_logits, state = self.step(frame.to(device, dtype), state)
