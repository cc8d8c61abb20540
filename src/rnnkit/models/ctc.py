"""Decoding CTC outputs: greedy (best path) and prefix beam search (best labelling).

A CTC model emits, at each of T frames, log-probabilities over C classes, one of which is the
blank. A path pi in C^T maps to a labelling by B(pi): collapse runs of equal classes, then drop
the blanks ("a a _ a" -> "a a", "a _ a" -> "a a", "a a" -> "a"). The probability of a
labelling y sums over its paths:

    p(y | x) = sum_{pi : B(pi) = y} prod_t p_t(pi_t)

Greedy decoding returns B(argmax path), the labelling of the single most probable path. Prefix
beam search (Hannun et al. 2014, without a language model) keeps the `beam_width` most probable
prefixes l, each with two probabilities over the frames seen so far:

    p_b(l)   paths that collapse to l and end in a blank
    p_nb(l)  paths that collapse to l and end in l's last label

and at each frame t, from every kept prefix l (p(l) = p_b(l) + p_nb(l)):

    blank          p_b(l)      += p(l) p_t(blank)
    repeat last c  p_nb(l)     += p_nb(l) p_t(c)      (runs collapse: stays l)
                   p_nb(l + c) += p_b(l) p_t(c)       (a blank separates the repeat)
    other c        p_nb(l + c) += p(l) p_t(c)

With a beam wide enough to keep every prefix, p(l) is exactly p(l | x). All sums run in log
space. Functions take one sequence (T, C) or a batch (T, B, C) with `lengths` (B,); labels are
class ids with the blank removed. What lives elsewhere: the model and CTC loss
(`rnnkit.models.speech`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

NEG_INF = float("-inf")


def collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """B(pi): merge runs of equal classes, then drop the blanks."""
    labels = []
    previous = None
    for c in path:
        if c != previous and c != blank:
            labels.append(int(c))
        previous = c
    return labels


def greedy_decode(log_probs: Tensor, blank: int = 0) -> list[int]:
    """The labelling of the most probable path: B(argmax_c log_probs[t, c] for each t).

    log_probs: (T, C); softmax-normalised or not, the argmax is the same.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {tuple(log_probs.shape)}")
    return collapse(log_probs.argmax(dim=-1).tolist(), blank)


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


Beams = dict[tuple[int, ...], tuple[float, float]]  # prefix l: (log p_b(l), log p_nb(l))


def _add(beams: Beams, prefix: tuple[int, ...], log_b: float, log_nb: float) -> None:
    """p_b(prefix) += exp(log_b), p_nb(prefix) += exp(log_nb), in log space."""
    if log_b == NEG_INF and log_nb == NEG_INF:
        return  # no path reaches this prefix (a repeat with no blank before it)
    old_b, old_nb = beams.get(prefix, (NEG_INF, NEG_INF))
    beams[prefix] = (_logaddexp(old_b, log_b), _logaddexp(old_nb, log_nb))


def prefix_beam_search(
    log_probs: Tensor, beam_width: int = 8, blank: int = 0
) -> list[tuple[list[int], float]]:
    """The `beam_width` most probable labellings of one sequence, best first.

    log_probs: (T, C), log-softmax over the classes. Returns (labels, log p(labels | x)) pairs,
    where the log-probability sums over all the labelling's paths that the beam kept.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {tuple(log_probs.shape)}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    classes = log_probs.shape[1]
    beams: Beams = {(): (0.0, NEG_INF)}  # the empty prefix, before any frame
    for frame in log_probs.detach().double().cpu().tolist():  # frame: C log-probabilities
        grown: Beams = {}
        for prefix, (log_b, log_nb) in beams.items():
            log_total = _logaddexp(log_b, log_nb)
            _add(grown, prefix, log_total + frame[blank], NEG_INF)
            for c in range(classes):
                if c == blank:
                    continue
                if prefix and prefix[-1] == c:
                    _add(grown, prefix, NEG_INF, log_nb + frame[c])
                    _add(grown, prefix + (c,), NEG_INF, log_b + frame[c])
                else:
                    _add(grown, prefix + (c,), NEG_INF, log_total + frame[c])
        ranked = sorted(grown.items(), key=lambda item: -_logaddexp(*item[1]))
        beams = dict(ranked[:beam_width])
    return [(list(prefix), _logaddexp(*probs)) for prefix, probs in beams.items()]


def _sequences(log_probs: Tensor, lengths: Tensor | None) -> list[Tensor]:
    """(T, B, C) and lengths (B,) -> B tensors (T_b, C), each cut to its own length."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (T, B, C), got shape {tuple(log_probs.shape)}")
    steps, batch = log_probs.shape[:2]
    ends = [steps] * batch if lengths is None else [int(n) for n in lengths.tolist()]
    return [log_probs[:end, b] for b, end in enumerate(ends)]


def greedy_decode_batch(
    log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0
) -> list[list[int]]:
    """Greedy labellings of a batch: log_probs (T, B, C), lengths (B,) or None (all T)."""
    return [greedy_decode(seq, blank) for seq in _sequences(log_probs, lengths)]


def beam_search_batch(
    log_probs: Tensor, lengths: Tensor | None = None, beam_width: int = 8, blank: int = 0
) -> list[list[int]]:
    """The best prefix-beam-search labelling of each sequence of a batch (T, B, C)."""
    return [
        prefix_beam_search(seq, beam_width, blank)[0][0] for seq in _sequences(log_probs, lengths)
    ]
