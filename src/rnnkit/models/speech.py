"""`SpeechModel`: speech recognition with CTC, and the error rates CER and WER.

    features (B, T, F) -> [Conv1d (stride s) -> ReLU] -> (B, T', K) -> biLSTM/GRU -> (B, T', D*H)
                       -> dropout -> linear -> logits (B, T', V + 1)

Class 0 is the CTC blank; class k (1 <= k <= V) is label k - 1, so a task's labels are
0 .. V-1 (digits 0-9 for spoken digits). The optional convolutional front end subsamples time:
with kernel k, stride s and padding p = k // 2 a sequence of L frames becomes

    L' = floor((L + 2p - k) / s) + 1

frames, and the CTC loss uses those L' as its input lengths. `batch.targets` is a (B, S) int64
tensor of label ids padded with -1 (each row's labels first). Decoding lives in
`rnnkit.models.ctc`; features from WAV files in `rnnkit.data.audio`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.batch import Batch
from rnnkit.layers import GRU, LSTM
from rnnkit.models._checks import check_choice, check_counts, check_rates
from rnnkit.models.ctc import beam_search_batch, greedy_decode_batch

BLANK = 0  # the CTC blank's class id
PAD_LABEL = -1  # fills batch.targets past each row's labels
SPEECH_CELLS: dict[str, type[nn.Module]] = {"lstm": LSTM, "gru": GRU}


@dataclass(frozen=True)
class SpeechConfig:
    """Everything that defines a SpeechModel's architecture (saved in the run's config.json)."""

    num_features: int  # F, features per frame (mel bands or MFCCs)
    num_labels: int  # V, labels 0 .. V-1; the model has V + 1 classes with the blank
    conv_channels: int = 0  # K, channels of the convolutional front end; 0: no front end
    conv_kernel: int = 5  # k, frames each convolution sees
    conv_stride: int = 2  # s, time subsampling of the front end
    hidden_size: int = 128  # H, recurrent state size per direction
    num_layers: int = 2  # stacked recurrent layers
    cell: str = "lstm"  # "lstm" or "gru"
    bidirectional: bool = True  # read both ways (D = 2)
    dropout: float = 0.1  # between layers and before the head

    def __post_init__(self) -> None:
        check_counts(self, "num_features", "num_labels", "hidden_size", "num_layers")
        check_counts(self, "conv_channels", minimum=0)
        if self.conv_kernel < 1 or self.conv_stride < 1:
            raise ValueError(
                f"conv_kernel and conv_stride must be >= 1, got {self.conv_kernel}, "
                f"{self.conv_stride}"
            )
        check_choice("cell", self.cell, SPEECH_CELLS)
        check_rates(self, "dropout")


def conv_output_lengths(lengths: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    """L' = floor((L + 2p - k) / s) + 1, the frames a Conv1d leaves of L frames."""
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


class SpeechModel(nn.Module):
    """CTC speech recogniser over feature frames: `SpeechModel(SpeechConfig(num_features=...))`.

    forward(features (B, T, F), lengths (B,) or None) -> (log_probs (T', B, V + 1), lengths
    (B,)), log-softmax in CTC's time-major layout. The training contract: loss(batch) (mean CTC
    loss), predict(batch) (greedy label lists); and beam_search(batch).
    """

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        self.config = config
        rnn_input = config.num_features
        self.front_end = None
        if config.conv_channels > 0:
            self.front_end = nn.Conv1d(
                config.num_features,
                config.conv_channels,
                config.conv_kernel,
                stride=config.conv_stride,
                padding=config.conv_kernel // 2,
            )
            rnn_input = config.conv_channels
        self.rnn = SPEECH_CELLS[config.cell](
            rnn_input,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        features = config.hidden_size * (2 if config.bidirectional else 1)  # D*H
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, config.num_labels + 1)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """The frames left of each sequence after the front end (unchanged without one)."""
        if self.front_end is None:
            return lengths
        k, s = self.config.conv_kernel, self.config.conv_stride
        return conv_output_lengths(lengths, k, s, k // 2)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, steps, _ = features.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=features.device)
        lengths = lengths.to(features.device)
        valid = torch.arange(steps, device=features.device) < lengths[:, None]  # (B, T)
        x = features * valid[..., None]  # padding frames are zero before the convolution
        if self.front_end is not None:
            x = F.relu(self.front_end(x.transpose(1, 2))).transpose(1, 2)  # (B, T', K)
            lengths = self.output_lengths(lengths)
        outputs, _ = self.rnn(x, lengths=lengths)  # (B, T', D*H)
        logits = self.head(self.dropout(outputs))  # (B, T', V + 1)
        return logits.log_softmax(dim=-1).transpose(0, 1), lengths  # (T', B, V + 1), (B,)

    def loss(self, batch: Batch) -> Tensor:
        """Mean CTC loss (per target label, then over the batch) against batch.targets (B, S)."""
        log_probs, lengths = self(batch.inputs, batch.lengths)
        targets = batch.targets.to(log_probs.device)
        target_lengths = (targets != PAD_LABEL).sum(dim=1)  # (B,)
        classes = (targets + 1).clamp(min=1)  # labels -> classes; padding is never read
        ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
        return ctc(log_probs, classes, lengths, target_lengths)

    def predict(self, batch: Batch) -> list[list[int]]:
        """Greedy (best path) label sequences, one list of label ids per utterance."""
        log_probs, lengths = self(batch.inputs, batch.lengths)
        return [[c - 1 for c in seq] for seq in greedy_decode_batch(log_probs, lengths, BLANK)]

    def beam_search(self, batch: Batch, beam_width: int = 8) -> list[list[int]]:
        """Prefix beam search label sequences, one list of label ids per utterance."""
        log_probs, lengths = self(batch.inputs, batch.lengths)
        decoded = beam_search_batch(log_probs, lengths, beam_width, BLANK)
        return [[c - 1 for c in seq] for seq in decoded]


# --- error rates ------------------------------------------------------------------------------


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions."""
    previous = list(range(len(hypothesis) + 1))  # distances from reference[:0]
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    """sum of edit distances / sum of reference lengths, over a corpus of token sequences."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(ref) for ref in references)
    if total == 0:
        raise ValueError("the references are empty")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True)) / total


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Character error rate over a corpus of transcripts."""
    return error_rate(references, hypotheses)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over a corpus of transcripts (words split on whitespace)."""
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])
