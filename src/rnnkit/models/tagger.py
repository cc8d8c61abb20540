"""`Tagger`: one tag per token (part of speech, named entities), from words and their characters.

    word ids (B, T) ──embedding──┐
                                 ├─ concat ─ dropout ─ biRNN ─ dropout ─ linear ─ emissions
    chars (B, T, W) ─ CharEncoder┘                                                (B, T, K)
                                               then a per-token softmax, or a CRF with Viterbi

The character encoder runs a small bidirectional RNN over the characters of each word and keeps
its final states (forward: after the last character, backward: after the first), so unseen words
still get a representation from their spelling. In training each word becomes `<unk>` with
probability `word_dropout`, so that the embedding of unknown words is learned rather than left
at its random start. Emissions are scored either independently per token (cross-entropy) or
jointly by a linear-chain CRF (`rnnkit.models.crf`).

Batch contract: inputs {"words": (B, T) int64, "chars": (B, T, W) int64}, id 0 padding in both
(chars of a word left-aligned, zero after; "chars" may be left out when `num_chars` is 0);
lengths (B,) words per sentence; targets (B, T) tag ids, -100 where there is no tag. Building
the vocabularies and reading files is `rnnkit.tasks.tag`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice, check_counts, check_rates
from rnnkit.models.crf import CRF, IGNORE_INDEX
from rnnkit.models.encoder import CELLS

UNK_ID = 1  # the id of <unk> in rnnkit.data.Vocab


@dataclass(frozen=True)
class TaggerConfig:
    """Hyper-parameters of a `Tagger`."""

    vocab_size: int  # words in the word vocabulary (id 0 = padding, 1 = unknown word)
    num_tags: int  # K: the tags the model chooses from
    num_chars: int = 0  # characters in the character vocabulary (0: no character RNN)
    embedding_dim: int = 100  # word embedding size
    char_embedding_dim: int = 30  # character embedding size
    char_hidden_size: int = 50  # character RNN units per direction
    cell: str = "lstm"  # "lstm", "gru" or "rnn", for both the word and the character RNN
    hidden_size: int = 128  # word RNN units per direction
    num_layers: int = 1  # stacked word RNN layers
    bidirectional: bool = True  # run the word RNN in both directions
    dropout: float = 0.33  # on the token features, between RNN layers and before the output
    word_dropout: float = 0.05  # training: each word becomes <unk> (id 1) with this probability
    crf: bool = True  # a CRF over the emissions (else an independent softmax per token)

    def __post_init__(self) -> None:
        check_counts(self, "vocab_size", "num_tags", "embedding_dim", "hidden_size", "num_layers")
        if self.num_chars < 0 or (self.num_chars and self.char_hidden_size < 1):
            raise ValueError("num_chars must be >= 0, and char_hidden_size >= 1 when it is not")
        check_choice("cell", self.cell, CELLS)
        check_rates(self, "dropout", "word_dropout")


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    dropout: float,
) -> nn.Module:
    """A batch-first rnnkit LSTM/GRU/RNN; dropout only acts between stacked layers."""
    return CELLS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
    )


def last_layer_state(state: Tensor | tuple[Tensor, ...], directions: int) -> Tensor:
    """The top layer's final h of each direction, concatenated: (B, D*H).

    state: h_n (num_layers*D, B, H), or a tuple whose first element is h_n (LSTM's (h_n, c_n)).
    """
    h_n = state[0] if isinstance(state, tuple) else state
    top = h_n[-directions:]  # (D, B, H)
    return top.transpose(0, 1).reshape(h_n.shape[1], -1)  # (B, D*H)


class CharEncoder(nn.Module):
    """Each word's characters -> the final states of a bidirectional RNN over them.

    forward(chars (B, T, W)) -> (B, T, 2 * hidden_size); words with no characters (padding)
    get zeros.
    """

    def __init__(self, num_chars: int, embedding_dim: int, hidden_size: int, cell: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, embedding_dim, padding_idx=0)
        self.rnn = make_rnn(cell, embedding_dim, hidden_size, 1, True, 0.0)
        self.output_size = 2 * hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)  # (N, W), one row per word slot
        lengths = (flat != 0).sum(dim=1)  # (N,)
        real = lengths > 0  # padding slots have no characters
        if not bool(real.any()):
            return self.embedding.weight.new_zeros(batch, steps, self.output_size)
        _, state = self.rnn(self.embedding(flat[real]), lengths=lengths[real])
        summary = last_layer_state(state, directions=2)  # (N_real, 2*H_c)
        # the state's dtype, not the embedding's: under CUDA autocast cuDNN returns float16
        features = summary.new_zeros(batch * steps, self.output_size)
        features[real] = summary
        return features.reshape(batch, steps, self.output_size)


class Tagger(nn.Module):
    """Word embeddings + character RNN, a (bi)RNN over the sentence, softmax or CRF output.

    forward(batch) -> emissions (B, T, K); loss(batch) -> scalar, the mean negative
    log-likelihood per tagged token; predict(batch) -> (B, T) tag ids (0 past each length).
    """

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=0)
        self.chars = (
            CharEncoder(c.num_chars, c.char_embedding_dim, c.char_hidden_size, c.cell)
            if c.num_chars
            else None
        )
        features = c.embedding_dim + (self.chars.output_size if self.chars is not None else 0)
        self.rnn = make_rnn(
            c.cell, features, c.hidden_size, c.num_layers, c.bidirectional, c.dropout
        )
        self.dropout = nn.Dropout(c.dropout)
        directions = 2 if c.bidirectional else 1
        self.output = nn.Linear(directions * c.hidden_size, c.num_tags)
        self.crf = CRF(c.num_tags) if c.crf else None

    def forward(self, batch: Batch) -> Tensor:
        words = batch.inputs["words"]  # (B, T)
        if self.training and self.config.word_dropout:  # so that <unk> is learned too
            dropped = torch.rand(words.shape, device=words.device) < self.config.word_dropout
            words = words.masked_fill(dropped & (words != 0), UNK_ID)
        x = self.embedding(words)  # (B, T, E)
        if self.chars is not None:
            if "chars" not in batch.inputs:
                raise ValueError('this tagger reads characters: batch.inputs needs "chars"')
            x = torch.cat([x, self.chars(batch.inputs["chars"])], dim=-1)  # (B, T, E + 2*H_c)
        h, _ = self.rnn(self.dropout(x), lengths=batch.lengths)  # (B, T, D*H)
        return self.output(self.dropout(h))  # (B, T, K)

    def loss(self, batch: Batch) -> Tensor:
        emissions = self(batch)  # (B, T, K)
        targets = batch.targets  # (B, T), IGNORE_INDEX where untagged
        if self.crf is None:
            return F.cross_entropy(
                emissions.reshape(-1, emissions.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        tagged = (targets != IGNORE_INDEX).sum().clamp(min=1)
        return self.crf(emissions, targets, batch.lengths).sum() / tagged

    def loss_weight(self, batch: Batch) -> int:
        """The tagged tokens `loss` averages over (`rnnkit.train.evaluate` weights by them)."""
        return int((batch.targets != IGNORE_INDEX).sum())

    def predict(self, batch: Batch) -> Tensor:
        emissions = self(batch)  # (B, T, K)
        if self.crf is not None:
            return self.crf.decode(emissions, batch.lengths)
        tags = emissions.argmax(dim=-1)  # (B, T)
        if batch.lengths is None:
            return tags
        steps = torch.arange(tags.shape[1], device=tags.device)
        return tags.masked_fill(steps[None, :] >= batch.lengths.to(tags.device)[:, None], 0)
