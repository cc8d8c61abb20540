"""CTC decoding against brute force: every path of C**T enumerated on tiny cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.models.ctc import (
    beam_search_batch,
    collapse,
    greedy_decode,
    greedy_decode_batch,
    prefix_beam_search,
)

BLANK = 0
CASES = [(classes, steps, seed) for classes in (3, 4) for steps in (1, 2, 3, 4) for seed in (0, 1)]


def random_log_probs(steps: int, classes: int, seed: int) -> torch.Tensor:
    """(T, C) log-softmax of spread-out random logits, in float64."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(steps, classes, generator=generator, dtype=torch.float64)
    return logits.log_softmax(dim=-1)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """{labelling: p(labelling | x)}, summing prod_t p_t(pi_t) over every path pi in C**T."""
    steps, classes = log_probs.shape
    probs = log_probs.exp().tolist()
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=steps):
        labels = tuple(collapse(path, BLANK))
        totals[labels] = totals.get(labels, 0.0) + math.prod(
            probs[t][c] for t, c in enumerate(path)
        )
    return totals


def best_path(log_probs: torch.Tensor) -> tuple[int, ...]:
    """The single most probable path, by enumeration."""
    steps, classes = log_probs.shape
    paths = itertools.product(range(classes), repeat=steps)
    return max(paths, key=lambda path: sum(float(log_probs[t, c]) for t, c in enumerate(path)))


@pytest.mark.parametrize(("classes", "steps", "seed"), CASES)
def test_brute_force_equals_torch_ctc_loss(classes: int, steps: int, seed: int) -> None:
    log_probs = random_log_probs(steps, classes, seed)
    totals = brute_force(log_probs)
    assert math.isclose(sum(totals.values()), 1.0, rel_tol=1e-9)
    ctc = torch.nn.CTCLoss(blank=BLANK, reduction="sum")
    for labels, probability in totals.items():
        if not labels:
            continue  # the empty labelling: checked below through the all-blank path
        loss = ctc(
            log_probs[:, None],  # (T, 1, C)
            torch.tensor([labels]),
            torch.tensor([steps]),
            torch.tensor([len(labels)]),
        )
        assert math.isclose(math.exp(-float(loss)), probability, rel_tol=1e-9)
    all_blank = math.exp(float(log_probs[:, BLANK].sum()))
    assert math.isclose(totals[()], all_blank, rel_tol=1e-12)


@pytest.mark.parametrize(("classes", "steps", "seed"), CASES)
def test_wide_prefix_beam_search_is_exact(classes: int, steps: int, seed: int) -> None:
    log_probs = random_log_probs(steps, classes, seed)
    totals = brute_force(log_probs)
    hypotheses = prefix_beam_search(log_probs, beam_width=len(totals), blank=BLANK)
    assert len(hypotheses) == len(totals)  # every labelling with a path, nothing else
    for labels, log_probability in hypotheses:
        assert math.isclose(math.exp(log_probability), totals[tuple(labels)], rel_tol=1e-9)
    best_labels, best_log_probability = hypotheses[0]
    assert tuple(best_labels) == max(totals, key=totals.get)
    assert math.isclose(best_log_probability, math.log(max(totals.values())), rel_tol=1e-9)


@pytest.mark.parametrize(("classes", "steps", "seed"), CASES)
def test_greedy_is_the_collapsed_best_path(classes: int, steps: int, seed: int) -> None:
    log_probs = random_log_probs(steps, classes, seed)
    assert greedy_decode(log_probs, BLANK) == collapse(best_path(log_probs), BLANK)


def test_collapse_merges_repeats_then_drops_blanks() -> None:
    a, b = 1, 2
    assert collapse([a, a], BLANK) == [a]  # a run of "a" is one "a"
    assert collapse([a, BLANK, a], BLANK) == [a, a]  # a blank separates a repeated label
    assert collapse([BLANK, a, a, BLANK, BLANK, a, b, b], BLANK) == [a, a, b]
    assert collapse([BLANK, BLANK], BLANK) == []
    assert collapse([2, 2, 0, 1], blank=2) == [0, 1]  # the blank need not be class 0


def one_hot_log_probs(path: list[int], classes: int = 3) -> torch.Tensor:
    """(T, C) log-probabilities putting 0.97 on path[t] at each step."""
    probs = torch.full((len(path), classes), 0.03 / (classes - 1), dtype=torch.float64)
    probs[torch.arange(len(path)), torch.tensor(path)] = 0.97
    return probs.log()


@pytest.mark.parametrize(
    ("path", "labels"),
    [([1, 1], [1]), ([1, 0, 1], [1, 1]), ([0, 1, 0], [1]), ([1, 1, 2, 2, 1], [1, 2, 1])],
)
def test_decoders_on_a_dominant_path(path: list[int], labels: list[int]) -> None:
    log_probs = one_hot_log_probs(path)
    assert greedy_decode(log_probs, BLANK) == labels
    assert prefix_beam_search(log_probs, beam_width=4, blank=BLANK)[0][0] == labels


def test_repeated_label_needs_a_blank_between() -> None:
    log_probs = random_log_probs(2, 2, seed=3)  # T = 2, classes blank and "a"
    totals = brute_force(log_probs)
    assert (1, 1) not in totals  # "a a" needs three frames: a _ a
    hypotheses = prefix_beam_search(log_probs, beam_width=10, blank=BLANK)
    assert [1, 1] not in [labels for labels, _ in hypotheses]
    loss = torch.nn.CTCLoss(blank=BLANK, reduction="sum")(
        log_probs[:, None], torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([2])
    )
    assert math.isinf(float(loss))
    log_probs = random_log_probs(3, 2, seed=3)
    only_path = math.exp(float(log_probs[0, 1] + log_probs[1, BLANK] + log_probs[2, 1]))
    assert math.isclose(brute_force(log_probs)[(1, 1)], only_path, rel_tol=1e-12)


def test_beam_search_finds_the_labelling_greedy_misses() -> None:
    # Each frame: blank 0.6, "a" 0.4. The best path is "_ _" (0.36), but "a" has three
    # paths: a_, _a, aa = 0.24 + 0.24 + 0.16 = 0.64.
    log_probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64).log()
    assert greedy_decode(log_probs, BLANK) == []
    labels, log_probability = prefix_beam_search(log_probs, beam_width=2, blank=BLANK)[0]
    assert labels == [1]
    assert math.isclose(math.exp(log_probability), 0.64, rel_tol=1e-12)


def test_batch_decoders_stop_at_each_length() -> None:
    steps, classes = 4, 3
    log_probs = torch.stack([one_hot_log_probs([1, 0, 2, 1]), one_hot_log_probs([2, 2, 1, 1])], 1)
    lengths = torch.tensor([4, 2])
    assert log_probs.shape == (steps, 2, classes)
    assert greedy_decode_batch(log_probs, lengths, BLANK) == [[1, 2, 1], [2]]
    assert beam_search_batch(log_probs, lengths, 4, BLANK) == [[1, 2, 1], [2]]
    assert greedy_decode_batch(log_probs, None, BLANK) == [[1, 2, 1], [2, 1]]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="beam_width"):
        prefix_beam_search(random_log_probs(2, 3, 0), beam_width=0)
    with pytest.raises(ValueError, match=r"\(T, C\)"):
        greedy_decode(torch.zeros(2, 3, 4))
