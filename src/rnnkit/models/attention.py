"""Attention over a padded source: additive (Bahdanau) and multiplicative (Luong "general").

    additive        score(q, k_s) = v^T tanh(W_q q + W_k k_s)      Bahdanau et al. 2015
    multiplicative  score(q, k_s) = q^T W k_s                      Luong et al. 2015, "general"
    weights         a_s = exp(score_s) / sum_{s' < len} exp(score_s')  for s < len, 0 past len
    context         c = sum_s a_s k_s

Shapes: query (B, H_q), keys (B, S, H_k), lengths (B,) or None (all S valid); scores and
weights (B, S); context (B, H_k). `forward` returns (context, weights); the weights are what an
attention heat-map plots. What lives elsewhere: the decoder that asks the query
(rnnkit.models.seq2seq) and the classifier's attention pooling (rnnkit.models.classifier).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.classifier import valid_steps

ATTENTIONS = ("additive", "multiplicative")  # the `attention` option of Seq2SeqConfig


def masked_softmax(scores: Tensor, lengths: Tensor | None) -> Tensor:
    """Softmax of scores (B, S) over each row's first lengths[b] positions; exactly 0 past them."""
    mask = valid_steps(lengths, scores.shape[0], scores.shape[1], scores.device)  # (B, S)
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, S)


class Attention(nn.Module):
    """The part every score shares: forward(query, keys, lengths) -> (context, weights).

    Subclasses define `score(query (B, H_q), keys (B, S, H_k)) -> (B, S)`.
    """

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.score(query, keys), lengths)  # (B, S)
        context = torch.einsum("bs,bsk->bk", weights, keys)  # (B, H_k)
        return context, weights


class AdditiveAttention(Attention):
    """score(q, k_s) = v^T tanh(W_q q + W_k k_s) (Bahdanau). Parameters: query_proj.weight W_q
    (A, H_q), key_proj.weight W_k (A, H_k), v.weight (1, A); no biases."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)  # W_k
        self.v = nn.Linear(attention_size, 1, bias=False)  # v

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        hidden = torch.tanh(self.query_proj(query)[:, None, :] + self.key_proj(keys))  # (B, S, A)
        return self.v(hidden).squeeze(-1)  # (B, S)


class MultiplicativeAttention(Attention):
    """score(q, k_s) = q^T W k_s (Luong's "general"). Parameter: weight W (H_q, H_k)."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(query_size, key_size))  # W
        nn.init.xavier_uniform_(self.weight)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.einsum("bq,qk,bsk->bs", query, self.weight, keys)  # (B, S)


def make_attention(kind: str, query_size: int, key_size: int) -> Attention:
    """The attention named by `kind` ("additive" or "multiplicative"); additive uses A = H_q."""
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, attention_size=query_size)
    if kind == "multiplicative":
        return MultiplicativeAttention(query_size, key_size)
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
