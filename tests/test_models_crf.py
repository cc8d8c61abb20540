"""The linear-chain CRF against brute force: every tag sequence enumerated on tiny cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.models.crf import CRF

K = 3  # tags in every case: 3**4 = 81 sequences at most


def brute_score(crf: CRF, emissions: torch.Tensor, tags: tuple[int, ...]) -> float:
    """s(y) of one sequence, written out term by term (emissions (n, K) of its own length)."""
    score = crf.start_transitions[tags[0]] + crf.end_transitions[tags[-1]]
    for t, tag in enumerate(tags):
        score = score + emissions[t, tag]
        if t > 0:
            score = score + crf.transitions[tags[t - 1], tag]
    return float(score.detach())


def all_scores(crf: CRF, emissions: torch.Tensor, length: int) -> dict[tuple[int, ...], float]:
    """{y: s(y)} over all K**length tag sequences of one sequence."""
    return {
        tags: brute_score(crf, emissions[:length], tags)
        for tags in itertools.product(range(K), repeat=length)
    }


def make_case(seed: int) -> tuple[CRF, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    crf = CRF(K).double()
    with torch.no_grad():  # larger than the init, so the transitions matter
        for parameter in crf.parameters():
            parameter.normal_(0, 1)
    emissions = torch.randn(4, 4, K, dtype=torch.float64)  # (B, T, K)
    lengths = torch.tensor([4, 1, 3, 2])
    return crf, emissions, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_partition_equals_brute_force_logsumexp(seed):
    crf, emissions, lengths = make_case(seed)
    ours = crf.log_partition(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        scores = list(all_scores(crf, emissions[b], n).values())
        expected = max(scores) + math.log(sum(math.exp(s - max(scores)) for s in scores))
        assert float(ours[b].detach()) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_equals_brute_force_argmax(seed):
    crf, emissions, lengths = make_case(seed)
    decoded = crf.decode(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        scores = all_scores(crf, emissions[b], n)
        best = max(scores, key=scores.get)
        assert tuple(decoded[b, :n].tolist()) == best
        assert decoded[b, n:].tolist() == [0] * (4 - n)  # padding


@pytest.mark.parametrize("seed", [0, 1])
def test_negative_log_likelihood_equals_brute_force(seed):
    crf, emissions, lengths = make_case(seed)
    tags = torch.randint(0, K, (4, 4))
    tags[torch.arange(4)[None, :] >= lengths[:, None]] = -100  # padding
    nll = crf(emissions, tags, lengths)
    path = crf.path_score(emissions, tags, lengths)
    for b, n in enumerate(lengths.tolist()):
        scores = all_scores(crf, emissions[b], n)
        gold = tuple(tags[b, :n].tolist())
        log_z = math.log(sum(math.exp(s) for s in scores.values()))
        assert float(nll[b].detach()) == pytest.approx(log_z - scores[gold], abs=1e-10)
        assert float(path[b].detach()) == pytest.approx(scores[gold], abs=1e-10)


def test_unknown_tag_sums_over_every_tag_at_that_position():
    crf, emissions, lengths = make_case(3)
    tags = torch.tensor([[0, -100, 2, 1], [1, -100, -100, -100], [2, 2, -100, -100], [0, 1, 0, 0]])
    lengths = torch.tensor([4, 1, 3, 4])
    nll = crf(emissions, tags, lengths)
    for b, n in enumerate(lengths.tolist()):
        scores = all_scores(crf, emissions[b], n)
        wanted = tags[b, :n].tolist()
        consistent = [
            s
            for y, s in scores.items()
            if all(w in (-100, v) for w, v in zip(wanted, y, strict=True))
        ]
        log_p = math.log(sum(map(math.exp, consistent))) - math.log(
            sum(map(math.exp, scores.values()))
        )
        assert float(nll[b].detach()) == pytest.approx(-log_p, abs=1e-10)


def test_gradients_are_finite_and_pass_gradcheck():
    crf, emissions, lengths = make_case(4)
    tags = torch.tensor([[0, 1, 2, 1], [2, -100, -100, -100], [1, -100, 0, -100], [2, 2, 0, 0]])
    emissions.requires_grad_(True)
    crf(emissions, tags, lengths).sum().backward()
    grads = [emissions.grad, *(p.grad for p in crf.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert emissions.grad[1, 1:].abs().sum() == 0  # padding gets no gradient
    assert torch.autograd.gradcheck(
        lambda e: crf(e, tags, lengths), (emissions.detach().requires_grad_(),)
    )


def test_lengths_none_means_full_length_and_batches_are_independent():
    crf, emissions, _ = make_case(5)
    full = torch.full((4,), 4)
    torch.testing.assert_close(crf.log_partition(emissions), crf.log_partition(emissions, full))
    assert torch.equal(crf.decode(emissions), crf.decode(emissions, full))
    alone = crf.log_partition(emissions[2:3, :3], torch.tensor([3]))
    together = crf.log_partition(emissions, torch.tensor([4, 1, 3, 2]))[2:3]
    torch.testing.assert_close(alone, together)


def test_bad_inputs_raise_value_errors():
    crf = CRF(K)
    with pytest.raises(ValueError, match="emissions must be"):
        crf.log_partition(torch.randn(2, 3, K + 1))
    with pytest.raises(ValueError, match="lengths must be in"):
        crf.log_partition(torch.randn(2, 3, K), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="tags must be in"):
        crf(torch.randn(2, 3, K), torch.tensor([[0, 1, K], [0, 0, 0]]))
    with pytest.raises(ValueError, match="num_tags"):
        CRF(0)


@pytest.mark.parametrize("crf", [True, False])
def test_tagger_evaluates_to_the_mean_over_tagged_tokens_however_batched(crf):
    from rnnkit.data import Batch
    from rnnkit.models.tagger import IGNORE_INDEX, Tagger, TaggerConfig
    from rnnkit.train import TrainConfig, evaluate

    torch.manual_seed(0)
    config = TaggerConfig(vocab_size=12, num_tags=4, embedding_dim=6, hidden_size=5, crf=crf)
    model = Tagger(config).eval()
    lengths = torch.tensor([5, 1, 3])
    words = torch.randint(2, 12, (3, 5)).masked_fill(torch.arange(5) >= lengths[:, None], 0)
    tags = torch.randint(0, 4, (3, 5)).masked_fill(torch.arange(5) >= lengths[:, None], -100)
    tags[0, 2] = IGNORE_INDEX  # an untagged token in the middle
    data = Batch({"words": words}, lengths, tags)
    assert model.loss_weight(data) == 8
    with torch.no_grad():  # per sentence: loss x tagged tokens, summed, over all tagged tokens
        rows = [
            Batch({"words": words[i : i + 1]}, lengths[i : i + 1], tags[i : i + 1])
            for i in range(3)
        ]
        exact = sum(model.loss(r) * model.loss_weight(r) for r in rows) / 8
        torch.testing.assert_close(model.loss(data), exact)
    for batch_size in (1, 2, 3):
        got = evaluate(model, data, (), TrainConfig(batch_size=batch_size))["loss"]
        assert got == pytest.approx(float(exact), rel=1e-5)
