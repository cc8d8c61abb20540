"""`CRF`: a linear-chain conditional random field over per-token emission scores.

For emissions e (B, T, K) and a tag sequence y of length n, the score of y is

    s(y) = start[y_0] + sum_{t<n} e_t[y_t] + sum_{0<t<n} trans[y_{t-1}, y_t] + end[y_{n-1}]

and p(y | x) = exp(s(y)) / Z with Z = sum over all K^n tag sequences of exp(s(y')). The forward
algorithm computes log Z in O(n K^2):

    alpha_0[j] = start[j] + e_0[j]
    alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + trans[i, j]) + e_t[j]
    log Z      = logsumexp_j(alpha_{n-1}[j] + end[j])

Viterbi decoding is the same recursion with max in place of logsumexp, plus back-pointers.
Sequences of a batch have their own lengths: past a sequence's end its alpha stays as it was,
so every quantity is that of the sequence alone. The tagger that feeds emissions in lives in
`rnnkit.models.tagger`; nothing here knows about words or files.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

IGNORE_INDEX = -100  # a target that is unknown at this position (padding, or a tag never seen)


def _time_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """(B, T) bool, True at the real steps of each sequence."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    lengths = lengths.to(device)
    if not bool((lengths >= 1).all()) or int(lengths.max()) > steps:
        raise ValueError(f"lengths must be in [1, {steps}], got {lengths.tolist()}")
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


class CRF(nn.Module):
    """Linear-chain CRF with learned start, end and transition scores.

    Args:
        num_tags: K, the number of tags.

    Parameters: `transitions` (K, K), transitions[i, j] scores tag i followed by tag j;
    `start_transitions` (K,) and `end_transitions` (K,) score the first and last tags.

    forward(emissions (B, T, K), tags (B, T), lengths (B,) or None) -> (B,) the negative
    log-likelihood -log p(tags | emissions) of each sequence. A tag of -100 inside a sequence
    means "unknown here": the likelihood then sums over every tag at that position.
    decode(emissions, lengths) -> (B, T) the most likely tags (0 past each length).
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"num_tags must be an int >= 1, got {num_tags!r}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1]: small, so the emissions decide at first."""
        for parameter in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def _check(self, emissions: Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"emissions must be (B, T, {self.num_tags}), got {tuple(emissions.shape)}"
            )

    def log_partition(self, emissions: Tensor, lengths: Tensor | None = None) -> Tensor:
        """log Z of each sequence (B,) by the forward algorithm (see the module docstring)."""
        self._check(emissions)
        batch, steps, _ = emissions.shape
        mask = _time_mask(lengths, batch, steps, emissions.device)  # (B, T)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K)
        for t in range(1, steps):
            scores = alpha[:, :, None] + self.transitions[None]  # (B, K_prev, K_next)
            new = torch.logsumexp(scores, dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t, None], new, alpha)  # ended sequences keep alpha
        return torch.logsumexp(alpha + self.end_transitions, dim=1)  # (B,)

    def forward(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """-log p(tags | emissions) of each sequence, (B,).

        The score of the gold tags is log Z restricted to the paths through them: the forward
        algorithm with every other tag's emission set to -inf (at -100 positions no tag is
        ruled out). For fully tagged sequences this is exactly s(tags).
        """
        self._check(emissions)
        if tags.shape != emissions.shape[:2]:
            raise ValueError(f"tags {tuple(tags.shape)} must be (B, T) = {emissions.shape[:2]}")
        known = tags != IGNORE_INDEX  # (B, T)
        if bool(((tags < 0) & known).any()) or bool((tags >= self.num_tags).any()):
            raise ValueError(f"tags must be in [0, {self.num_tags}) or {IGNORE_INDEX}")
        allowed = nn.functional.one_hot(tags.clamp(min=0), self.num_tags).bool()  # (B, T, K)
        allowed |= ~known[:, :, None]
        clamped = emissions.masked_fill(~allowed, float("-inf"))  # (B, T, K)
        return self.log_partition(emissions, lengths) - self.log_partition(clamped, lengths)

    def path_score(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """s(tags) of each sequence (B,), term by term as in the module docstring."""
        self._check(emissions)
        batch, steps, _ = emissions.shape
        mask = _time_mask(lengths, batch, steps, emissions.device)  # (B, T)
        tags = tags.clamp(min=0)  # padding: masked out below
        emitted = emissions.gather(2, tags[:, :, None]).squeeze(2)  # (B, T)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)  # (B,)
        score = self.start_transitions[tags[:, 0]] + (emitted * mask).sum(1)
        score = score + (moved * mask[:, 1:]).sum(1)
        return score + self.end_transitions[last]

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The most likely tag sequences by Viterbi, (B, T) int64, 0 past each length."""
        self._check(emissions)
        batch, steps, num_tags = emissions.shape
        mask = _time_mask(lengths, batch, steps, emissions.device)  # (B, T)
        stay = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)  # (B, K)
        delta = self.start_transitions + emissions[:, 0]  # (B, K) best score ending in each tag
        pointers = []  # pointers[t-1][b, j]: the best tag at t-1 given tag j at t
        for t in range(1, steps):
            scores = delta[:, :, None] + self.transitions[None]  # (B, K_prev, K_next)
            best, previous = scores.max(dim=1)  # (B, K) each
            delta = torch.where(mask[:, t, None], best + emissions[:, t], delta)
            pointers.append(torch.where(mask[:, t, None], previous, stay))  # padding: identity
        tag = (delta + self.end_transitions).argmax(dim=1)  # (B,) the last real tag
        path = [tag]
        for previous in reversed(pointers):  # identity pointers carry `tag` back to the end
            tag = previous.gather(1, tag[:, None]).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~mask, 0)
