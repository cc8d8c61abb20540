"""`LanguageModel`: next-token prediction over characters, words or subwords, with tied weights.

    tokens (B, T) ─ TextEncoder (embedding, dropout, RNN, dropout) ─ h (B, T, H)
                  ─ [projection H -> E] ─ logits = W_emb · h' + b (B, T, V)

The output layer reuses the embedding matrix W_emb (V, E) (Press & Wolf 2017; Inan et al. 2017):
when E == H the hidden state is scored against it directly, otherwise a linear projection
H -> E comes first. `tie_weights=False` gives an ordinary linear output layer (H -> V).

Training reads one long token stream with truncated BPTT (`rnnkit.train.tbptt`), so the model
implements the stream contract: `loss(batch, state) -> (loss, state)` with the mean token
cross-entropy in nats, and `predict(batch, state) -> (token ids, state)`. Perplexity is
exp(loss); per character, loss / (characters per token); bits are nats / ln 2.

`generate(prompt, sampling, generator)` yields sampled token ids one at a time through
`TextEncoder.step`, so each new token costs one step whatever the length generated so far.
Tokenizers, files and printing live in `rnnkit.tasks.lm`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice, check_counts, check_rates
from rnnkit.models.encoder import CELLS, TextEncoder
from rnnkit.models.sampling import SamplingConfig, sample_token


@dataclass(frozen=True)
class LanguageModelConfig:
    """Hyper-parameters of a `LanguageModel`."""

    vocab_size: int  # V: token ids 0 .. V-1 (0 is padding and never predicted in a stream)
    embedding_dim: int = 256  # E: features of each token's embedding
    hidden_size: int = 256  # H: recurrent state size
    num_layers: int = 1  # stacked recurrent layers
    cell: str = "lstm"  # "lstm", "gru" or "rnn"
    dropout: float = 0.0  # on embeddings, between layers and on the RNN's outputs, in training
    tie_weights: bool = True  # output layer shares the embedding matrix (projection if E != H)

    def __post_init__(self) -> None:
        check_counts(self, "vocab_size", "embedding_dim", "hidden_size", "num_layers")
        check_choice("cell", self.cell, CELLS)
        check_rates(self, "dropout")


class LanguageModel(nn.Module):
    """A recurrent language model: p(x_t | x_<t) = softmax(logits_t).

    Shapes: tokens (B, T) int64; logits (B, T, V); state in torch.nn's layout,
    (num_layers, B, H) (LSTM: a pair (h, c)); None starts from zeros.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = TextEncoder(
            c.vocab_size, c.embedding_dim, c.hidden_size, c.num_layers, c.cell, dropout=c.dropout
        )
        self.projection: nn.Linear | None = None
        self.output: nn.Linear | None = None
        if c.tie_weights:
            if c.hidden_size != c.embedding_dim:
                self.projection = nn.Linear(c.hidden_size, c.embedding_dim, bias=False)
            self.output_bias = nn.Parameter(torch.zeros(c.vocab_size))
        else:
            self.output = nn.Linear(c.hidden_size, c.vocab_size)

    def scores(self, hidden: Tensor) -> Tensor:
        """Logits (..., V) of the encoder's outputs (..., H)."""
        if self.output is not None:
            return self.output(hidden)
        if self.projection is not None:
            hidden = self.projection(hidden)  # (..., E)
        return F.linear(hidden, self.encoder.embedding.weight, self.output_bias)  # tied: W_emb

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (B, T, V) of the next token after each position, and the final state."""
        hidden, state = self.encoder(tokens, state=state)  # (B, T, H)
        return self.scores(hidden), state

    def step(self, token: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token per row (B,) -> (logits (B, V) of the next token, new state)."""
        hidden, state = self.encoder.step(token, state)  # (B, H)
        return self.scores(hidden), state

    def loss(self, batch: Batch, state: State | None = None) -> tuple[Tensor, State]:
        """Mean cross-entropy (nats per token) of batch.targets (B, T), and the final state.

        Targets equal to -100 (padding) are not counted.
        """
        logits, state = self(batch.inputs, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)
        return loss, state

    def predict(self, batch: Batch, state: State | None = None) -> tuple[Tensor, State]:
        """The most likely next token at each position (B, T), and the final state."""
        logits, state = self(batch.inputs, state)
        return logits.argmax(dim=-1), state

    @torch.no_grad()
    def generate(
        self, prompt: Sequence[int], sampling: SamplingConfig, generator: torch.Generator
    ) -> Iterator[int]:
        """Token ids sampled after `prompt` (at least one id), one at a time, without end.

        The prompt runs through `forward` once; every later token costs one `step`. Put the
        model in eval mode first (dropout would otherwise act). Stop by leaving the loop.
        """
        if len(prompt) == 0:
            raise ValueError("generate needs a prompt of at least one token")
        device = self.encoder.embedding.weight.device
        tokens = torch.tensor([list(prompt)], dtype=torch.int64, device=device)  # (1, P)
        logits, state = self(tokens)
        next_logits = logits[:, -1]  # (1, V)
        while True:
            token = sample_token(next_logits.cpu(), sampling, generator)  # (1,)
            yield int(token)
            next_logits, state = self.step(token.to(device), state)
