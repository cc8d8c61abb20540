"""`TextEncoder`: token embedding followed by a recurrent stack, shared by the text task models.

The classifier (`rnnkit.models.classifier`), the language model and the tagger put a head on top
of the same encoder under the attribute name `encoder`, so its parameters have the same names
in every run (`encoder.embedding.weight`, `encoder.rnn.weight_ih_l0`, ...). That is what makes
transfer learning a plain copy: `rnnkit train classify --init-from LM_RUN` loads the language
model's `encoder.*` tensors into the classifier (ULMFiT style), see `copy_encoder_weights`.

What the encoder does not know: heads, losses, pooling, tokenizers, files.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.models._checks import check_choice, check_counts, check_rate

CELLS: dict[str, type[nn.Module]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}  # `cell` option


class TextEncoder(nn.Module):
    """Embedding + rnnkit LSTM/GRU/RNN (batch-first), with dropout on its input and output.

    Args:
        vocab_size: V, the number of token ids (the embedding's rows).
        embedding_dim: E, the features of each token's embedding.
        hidden_size: H, the recurrent state size of each direction.
        num_layers: stacked recurrent layers.
        cell: "lstm", "gru" or "rnn" (Elman, tanh).
        bidirectional: also run backwards in time and concatenate (D = 2); no `step()` then.
        dropout: on the embeddings, between stacked layers and on the outputs, in training.
        padding_idx: the padding token id, whose embedding stays zero (0 in rnnkit.data).

    Shapes: tokens (B, T) int64, lengths (B,) or None; outputs (B, T, D*H), zero past each
    length; state in torch.nn's layout, (D*num_layers, B, H) (LSTM: a pair (h, c)).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.bidirectional = bidirectional
        check_counts(self, "vocab_size", "embedding_dim", "hidden_size", "num_layers")
        check_choice("cell", cell, CELLS)
        check_rate("dropout", dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.rnn = CELLS[cell](
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def output_size(self) -> int:
        """D*H, the features of each output step."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def forward(
        self, tokens: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """Encode token ids (B, T): (outputs (B, T, D*H), final state), from `state` or zeros.

        With `lengths` each sequence's final state is taken at its own last step (both
        directions) and its outputs past its length are zero.
        """
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, state = self.rnn(x, state, lengths=lengths)  # (B, T, D*H)
        return self.dropout(outputs), state

    def step(
        self, token: Tensor, state: State | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """One step for streaming: token ids (B,) -> (output (B, H), new state).

        `reset` (B,) bool starts the chosen samples afresh. Driving `step` over a sequence gives
        the outputs of `forward`, one step at a time (unidirectional encoders only).
        """
        x = self.dropout(self.embedding(token))  # (B, E)
        output, state = self.rnn.step(x, state, reset=reset)  # (B, H)
        return self.dropout(output), state

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, output_size={self.output_size}"


def copy_encoder_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy every `encoder.*` tensor of `source` into `target` (both hold a TextEncoder).

    The encoders must have the same vocabulary size, cell, sizes and layers (a bidirectional
    target is refused: a language model's encoder runs forward only). Returns the names copied.
    """
    src, dst = source.encoder, target.encoder
    assert isinstance(src, TextEncoder) and isinstance(dst, TextEncoder), "both need .encoder"
    mismatched = [
        f"{name} {getattr(src, name)!r} vs {getattr(dst, name)!r}"
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "cell")
        if getattr(src, name) != getattr(dst, name)
    ]
    if src.bidirectional or dst.bidirectional:
        mismatched.append("bidirectional (the encoders must both run forward only)")
    if mismatched:
        raise ValueError(f"cannot copy the encoder: it differs in {'; '.join(mismatched)}")
    weights = src.state_dict()
    with torch.no_grad():
        for name, tensor in dst.state_dict().items():
            tensor.copy_(weights[name])
    return [f"encoder.{name}" for name in weights]
