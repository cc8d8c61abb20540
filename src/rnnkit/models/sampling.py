"""Choosing the next token from a model's scores: temperature, top-k and nucleus (top-p).

Each filter takes logits (..., V) and returns logits of the same shape in which the tokens it
rules out are -inf, so filters compose and `softmax` of the result is the distribution sampled:

    p_i = softmax(z / T)_i                        temperature T > 0 (T -> 0: the argmax)
    top-k:  keep the k tokens of largest z_i       (exactly k, ties broken by position)
    top-p:  sort p descending, keep the smallest prefix whose mass is >= p (Holtzman et al. 2020)

`sample_token` applies them in that order (temperature, top-k, top-p) and draws one token per
row with a `torch.Generator`, so a fixed seed gives the same tokens. `sample_bernoulli` draws
multi-hot frames (music: each pitch on with probability sigmoid(z / T)). Nothing here knows a
model; `rnnkit.models.language_model` and `rnnkit.models.music` call these when generating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is drawn from the model's scores."""

    temperature: float = 1.0  # divides the logits; < 1 sharper, > 1 flatter, 0 always the argmax
    top_k: int | None = None  # keep only the k most likely tokens (None: all)
    top_p: float | None = None  # keep the smallest set of tokens with mass >= top_p (None: all)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None for all tokens), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None for all tokens), got {self.top_p}")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """z / T. T = 0 keeps only the largest logit of each row (greedy decoding)."""
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)  # (..., 1)
        return torch.full_like(logits, -math.inf).scatter(-1, best, 0.0)
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Logits (..., V) with all but the k largest of each row set to -inf."""
    if k >= logits.shape[-1]:
        return logits
    kept = logits.sort(dim=-1, descending=True, stable=True).indices[..., :k]  # ties: first
    mask = torch.ones_like(logits, dtype=torch.bool).scatter(-1, kept, False)  # True: dropped
    return logits.masked_fill(mask, -math.inf)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Logits (..., V) keeping, per row, the smallest set of most likely tokens with mass >= p.

    A token is dropped when the tokens ranked above it already hold mass >= p; the most likely
    token is always kept, and p >= 1 keeps every token (a float32 running sum reaches 1 before
    the last tokens do).
    """
    if p >= 1:
        return logits
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)  # (..., V) each
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    dropped_sorted = mass_before >= p
    dropped_sorted[..., 0] = False
    dropped = torch.zeros_like(dropped_sorted).scatter(-1, order, dropped_sorted)
    return logits.masked_fill(dropped, -math.inf)


def filter_logits(logits: Tensor, config: SamplingConfig) -> Tensor:
    """Temperature, then top-k, then top-p: the logits whose softmax is sampled."""
    logits = apply_temperature(logits.float(), config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None:
        logits = top_p_filter(logits, config.top_p)
    return logits


def sample_token(logits: Tensor, config: SamplingConfig, generator: torch.Generator) -> Tensor:
    """One token id per row of logits (B, V): (B,) int64, drawn with `generator`."""
    probs = filter_logits(logits, config).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_bernoulli(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """Multi-hot frames from independent Bernoulli logits (B, P): (B, P) float of 0s and 1s.

    Each unit is 1 with probability sigmoid(z / T); T = 0 takes the units with z > 0.
    """
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0:
        return (logits > 0).float()
    probs = torch.sigmoid(logits.float() / temperature)  # (B, P)
    return torch.bernoulli(probs, generator=generator)
