"""`Classifier`: a sequence classifier, embedding -> (bi)RNN encoder -> pooling -> linear head.

    tokens (B, T) -> TextEncoder -> outputs (B, T, D*H) -> pool over valid steps -> (B, D*H)
                  -> dropout -> linear -> logits (B, C)

Pooling never looks at padding: each sequence is pooled over its own `lengths[b]` steps.

    last       forward direction at t = len - 1, backward direction at t = 0 (the final states)
    mean       sum_t o_t / len
    max        max_t o_t, per feature
    attention  a_t = softmax_t(v . tanh(W o_t + b)) over t < len;  sum_t a_t o_t

The encoder is the shared `TextEncoder` under the attribute `encoder`, so a language model's
encoder weights load into it by name (transfer learning, `copy_encoder_weights`). What lives
elsewhere: tokenization and data (rnnkit.tasks.classify), training (rnnkit.train).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice
from rnnkit.models.encoder import CELLS, TextEncoder

POOLINGS = ("last", "mean", "max", "attention")


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines a Classifier's architecture (saved in the run's config.json)."""

    vocab_size: int  # V, token ids 0 .. V-1 (0 is padding)
    num_classes: int  # C, labels 0 .. C-1
    embedding_dim: int = 128  # E, features per token embedding
    hidden_size: int = 128  # H, recurrent state size per direction
    num_layers: int = 1  # stacked recurrent layers
    cell: str = "lstm"  # "lstm", "gru" or "rnn"
    bidirectional: bool = True  # read both ways (D = 2)
    dropout: float = 0.3  # on embeddings, between layers, on outputs and before the head
    pooling: str = "max"  # "last", "mean", "max" or "attention"

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("cell", self.cell, CELLS)


# --- pooling over valid steps -----------------------------------------------------------------


def valid_steps(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """(B, T) bool mask, True at t < lengths[b] (all True when lengths is None)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device) < lengths.to(device)[:, None]


def pool_last(outputs: Tensor, lengths: Tensor | None, bidirectional: bool) -> Tensor:
    """(B, T, D*H) -> (B, D*H): the forward half at each sequence's last step, the backward half
    at t = 0 (where the backward direction ends)."""
    batch, steps, features = outputs.shape
    last = torch.full((batch,), steps - 1, device=outputs.device)
    if lengths is not None:
        last = lengths.to(outputs.device) - 1
    at_end = outputs[torch.arange(batch, device=outputs.device), last]  # (B, D*H)
    if not bidirectional:
        return at_end
    half = features // 2
    return torch.cat([at_end[:, :half], outputs[:, 0, half:]], dim=-1)


def pool_mean(outputs: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, F) -> (B, F): the mean over each sequence's valid steps."""
    mask = valid_steps(lengths, outputs.shape[0], outputs.shape[1], outputs.device)  # (B, T)
    total = (outputs * mask[..., None]).sum(dim=1)  # (B, F)
    return total / mask.sum(dim=1, keepdim=True).to(outputs.dtype)


def pool_max(outputs: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, F) -> (B, F): the maximum over each sequence's valid steps, per feature."""
    mask = valid_steps(lengths, outputs.shape[0], outputs.shape[1], outputs.device)  # (B, T)
    return outputs.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)


class AttentionPooling(nn.Module):
    """a_t = softmax over valid t of v . tanh(W o_t + b); pooled = sum_t a_t o_t.

    forward(outputs (B, T, F), lengths) -> pooled (B, F); `weights` gives a (B, T), zero at
    padding and summing to 1 over each sequence's valid steps.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(features, features)  # W, b
        self.score = nn.Linear(features, 1, bias=False)  # v

    def weights(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        mask = valid_steps(lengths, outputs.shape[0], outputs.shape[1], outputs.device)  # (B, T)
        scores = self.score(torch.tanh(self.proj(outputs))).squeeze(-1)  # (B, T)
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=1)  # (B, T)

    def forward(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        a = self.weights(outputs, lengths)  # (B, T)
        return torch.einsum("bt,btf->bf", a, outputs)  # (B, F)


# --- the model --------------------------------------------------------------------------------


class Classifier(nn.Module):
    """Sequence classifier over token ids: `Classifier(ClassifierConfig(vocab_size=..., ...))`.

    forward(tokens (B, T), lengths (B,) or None) -> logits (B, C). The training contract:
    loss(batch) (mean cross-entropy), predict(batch) (class ids (B,)); and probabilities(batch).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TextEncoder(
            config.vocab_size,
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            cell=config.cell,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
        )
        features = self.encoder.output_size  # D*H
        self.attention = AttentionPooling(features) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, config.num_classes)

    def pool(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, T, D*H) encoder outputs -> (B, D*H), by config.pooling over the valid steps."""
        pooling = self.config.pooling
        if pooling == "last":
            return pool_last(outputs, lengths, self.config.bidirectional)
        if pooling == "mean":
            return pool_mean(outputs, lengths)
        if pooling == "max":
            return pool_max(outputs, lengths)
        assert self.attention is not None, "built with pooling='attention'"
        return self.attention(outputs, lengths)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        outputs, _ = self.encoder(tokens, lengths)  # (B, T, D*H)
        return self.head(self.dropout(self.pool(outputs, lengths)))  # (B, C)

    def attention_weights(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T) attention over the steps of each sequence (pooling='attention' only)."""
        if self.attention is None:
            raise ValueError(
                f"attention_weights needs pooling='attention', not {self.config.pooling!r}"
            )
        outputs, _ = self.encoder(tokens, lengths)
        return self.attention.weights(outputs, lengths)

    def loss(self, batch: Batch) -> Tensor:
        """Mean cross-entropy of the logits against batch.targets (B,) class ids."""
        return F.cross_entropy(self(batch.inputs, batch.lengths), batch.targets)

    def predict(self, batch: Batch) -> Tensor:
        """The most probable class of each sequence, (B,) int64."""
        return self(batch.inputs, batch.lengths).argmax(dim=-1)

    def probabilities(self, batch: Batch) -> Tensor:
        """Softmax over the classes, (B, C); rows sum to 1."""
        return self(batch.inputs, batch.lengths).softmax(dim=-1)
