"""Seq2Seq and attention: scores against hand-written formulas, masking against a manual
softmax, beam search against greedy decoding and teacher-forced scoring, and a digit-reversal
task solved end to end.
"""

from __future__ import annotations

import random

import pytest
import torch

from rnnkit.data import Batch
from rnnkit.models.attention import (
    AdditiveAttention,
    MultiplicativeAttention,
    masked_softmax,
)
from rnnkit.models.seq2seq import EOS, PAD, Seq2Seq, Seq2SeqConfig
from rnnkit.train import TrainConfig, evaluate

torch.set_num_threads(1)
LENGTHS = torch.tensor([5, 2, 7, 1])  # unsorted, one full, one of a single step
DIGIT = 3  # id of the digit 0; digits 0-9 are ids 3..12


def _query_keys(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(len(LENGTHS), 4, generator=generator)  # (B, H_q)
    keys = torch.randn(len(LENGTHS), int(LENGTHS.max()), 6, generator=generator)  # (B, S, H_k)
    return query, keys


def test_additive_score_is_v_tanh_of_projections():
    attention = AdditiveAttention(query_size=4, key_size=6, attention_size=5).requires_grad_(False)
    query, keys = _query_keys()
    w_q, w_k, v = attention.query_proj.weight, attention.key_proj.weight, attention.v.weight[0]
    expected = torch.tensor(
        [
            [float(v @ torch.tanh(w_q @ query[b] + w_k @ keys[b, s])) for s in range(keys.shape[1])]
            for b in range(keys.shape[0])
        ]
    )
    torch.testing.assert_close(attention.score(query, keys), expected)


def test_multiplicative_score_is_q_w_k():
    attention = MultiplicativeAttention(query_size=4, key_size=6).requires_grad_(False)
    query, keys = _query_keys()
    expected = torch.tensor(
        [
            [float(query[b] @ attention.weight @ keys[b, s]) for s in range(keys.shape[1])]
            for b in range(keys.shape[0])
        ]
    )
    torch.testing.assert_close(attention.score(query, keys), expected)


@pytest.mark.parametrize("attention", [AdditiveAttention(4, 6, 5), MultiplicativeAttention(4, 6)])
def test_weights_are_a_softmax_over_the_valid_source_steps_only(attention):
    query, keys = _query_keys()
    garbage = keys.clone()
    for b, n in enumerate(LENGTHS.tolist()):
        garbage[b, n:] = 100.0  # padding must change nothing
    context, weights = attention(query, garbage, LENGTHS)
    scores = attention.score(query, keys)
    for b, n in enumerate(LENGTHS.tolist()):
        expected = torch.zeros(keys.shape[1])
        expected[:n] = scores[b, :n].exp() / scores[b, :n].exp().sum()
        torch.testing.assert_close(weights[b], expected)
        torch.testing.assert_close(context[b], expected[:n] @ keys[b, :n])
    assert (weights[torch.arange(keys.shape[1]) >= LENGTHS[:, None]] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(LENGTHS)))


def test_masked_softmax_without_lengths_is_a_plain_softmax():
    scores = torch.randn(3, 5)
    torch.testing.assert_close(masked_softmax(scores, None), scores.softmax(dim=-1))


# --- the model ------------------------------------------------------------------------------


def _model(seed: int, cell: str, attention: str, input_feeding: bool = True) -> Seq2Seq:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        source_vocab_size=11,
        target_vocab_size=9,
        embedding_dim=8,
        hidden_size=12,
        cell=cell,
        attention=attention,
        input_feeding=input_feeding,
    )
    return Seq2Seq(config).eval()


def _source(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(1, 11, (len(LENGTHS), int(LENGTHS.max())), generator=generator)
    return source.masked_fill(torch.arange(source.shape[1]) >= LENGTHS[:, None], PAD)


MODELS = [
    ("lstm", "additive", True),
    ("gru", "multiplicative", True),
    ("lstm", "multiplicative", False),
    ("rnn", "additive", True),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("cell", "attention", "input_feeding"), MODELS)
def test_beam_of_width_one_is_greedy(seed, cell, attention, input_feeding):
    model, source = _model(seed, cell, attention, input_feeding), _source(seed)
    greedy = model.greedy(source, LENGTHS, max_len=12)
    beam = model.beam_search(source, LENGTHS, beam=1, max_len=12, length_penalty=0.6)
    assert torch.equal(beam.tokens, greedy.tokens)
    torch.testing.assert_close(beam.log_probs, greedy.log_probs)
    torch.testing.assert_close(beam.attention, greedy.attention)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("cell", "attention", "input_feeding"), MODELS)
def test_wide_beam_scores_at_least_as_well_as_greedy(seed, cell, attention, input_feeding):
    model, source = _model(seed, cell, attention, input_feeding), _source(seed)
    greedy = model.greedy(source, LENGTHS, max_len=8)
    beam = model.beam_search(source, LENGTHS, beam=6, max_len=8, length_penalty=0.0)
    with torch.no_grad():
        greedy_score = model.sequence_log_prob(source, LENGTHS, greedy.tokens)
        beam_score = model.sequence_log_prob(source, LENGTHS, beam.tokens)
    torch.testing.assert_close(greedy_score, greedy.log_probs)  # decoders report true scores
    torch.testing.assert_close(beam_score, beam.log_probs)
    assert (beam_score >= greedy_score - 1e-5).all(), (beam_score, greedy_score)


def _prefix_log_probs(model, source, prefixes):
    """log p of each next token after each prefix (one source): {prefix: (V,) log-probs}, by
    teacher-forced scoring of the prefix (the decoder's own numbers, no beam bookkeeping)."""
    out = {}
    for prefix in prefixes:
        targets = torch.tensor([[*prefix, PAD]])  # the last position: the next token's logits
        logits, _ = model.unroll(source, None, targets, teacher_forcing=1.0)
        log_probs = logits[0, -1].log_softmax(dim=-1)
        log_probs[[PAD, 1]] = float("-inf")  # PAD and BOS are never emitted
        out[prefix] = log_probs
    return out


def _reference_beam(model, source, beam, max_len, alpha):
    """Beam search written plainly: keep the `beam` best hypotheses each step, a finished one
    (ending in EOS) keeping its score; return the finished one with the best score / GNMT lp,
    or the best unfinished one when none finished."""
    hypotheses = [((), 0.0)]
    for _ in range(max_len):
        growing = [h for h, _ in hypotheses if not h or h[-1] != EOS]
        if not growing:
            break
        steps = _prefix_log_probs(model, source, growing)
        candidates = [(h, score) for h, score in hypotheses if h and h[-1] == EOS]
        for h, score in hypotheses:
            if not h or h[-1] != EOS:
                candidates += [(h + (v,), score + float(lp)) for v, lp in enumerate(steps[h])]
        hypotheses = sorted(candidates, key=lambda c: -c[1])[:beam]
    penalty = lambda h: ((5 + len(h)) / 6) ** alpha  # noqa: E731
    finished = [(h, s) for h, s in hypotheses if h[-1] == EOS] or hypotheses
    return max(finished, key=lambda c: c[1] / penalty(c[0]))[0]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_beam_search_returns_what_a_plain_beam_search_returns(alpha):
    """Tiny models with peaked outputs and a short max_len, where hypotheses get cut off: the
    result is the best finished hypothesis (an unfinished one, which lacks EOS's log-prob, was
    chosen over it in 27 of 120 such cases before)."""
    torch.set_default_dtype(torch.float64)
    try:
        for seed in range(12):
            torch.manual_seed(seed)
            config = Seq2SeqConfig(
                source_vocab_size=7, target_vocab_size=5, embedding_dim=4, hidden_size=5,
                dropout=0.0,
            )  # fmt: skip
            model = Seq2Seq(config).eval()
            with torch.no_grad():
                model.output.weight.mul_(3)
                model.output.bias.normal_(0, 1)
            source = torch.tensor([[3, 4, 5]])
            with torch.no_grad():
                got = model.beam_search(source, beam=3, max_len=3, length_penalty=alpha).tokens[0]
                expected = _reference_beam(model, source, 3, 3, alpha)
            assert tuple(t for t in got.tolist() if t != PAD) == expected, seed
    finally:
        torch.set_default_dtype(torch.float32)


def test_decoders_pad_after_eos_and_attend_only_to_the_source():
    model, source = _model(0, "gru", "additive"), _source(0)
    padding = torch.arange(source.shape[1]) >= LENGTHS[:, None]  # (B, S)
    for decoded in (model.greedy(source, LENGTHS), model.beam_search(source, LENGTHS, beam=3)):
        tokens, attention = decoded.tokens, decoded.attention
        after_eos = (tokens == EOS).long().cumsum(dim=1) - (tokens == EOS).long() > 0
        assert (tokens[after_eos] == PAD).all() and (tokens[~after_eos] != PAD).all()
        assert (attention[padding[:, None, :].expand_as(attention)] == 0).all()
        torch.testing.assert_close(attention.sum(-1), (~after_eos).float())


def test_predictions_ignore_source_padding():
    model, source = _model(1, "lstm", "multiplicative"), _source(1)
    garbage = source.masked_fill(source == PAD, 5)
    torch.testing.assert_close(
        model.greedy(garbage, LENGTHS).log_probs, model.greedy(source, LENGTHS).log_probs
    )


def test_loss_ignores_target_padding_and_sampling_changes_inputs():
    model, source = _model(2, "lstm", "additive"), _source(2)
    targets = torch.tensor([[3, 4, EOS, PAD], [5, EOS, PAD, PAD], [6, 7, 8, EOS], [EOS, 0, 0, 0]])
    batch = Batch(source, LENGTHS, targets)
    tokens = (targets != PAD).sum()
    expected = -model.sequence_log_prob(source, LENGTHS, targets).sum() / tokens
    torch.testing.assert_close(model.loss(batch), expected)
    model.train()
    model.teacher_forcing = 0.0  # the decoder now feeds its own argmax guesses
    model.dropout.p = model.encoder.dropout.p = 0.0
    assert not torch.allclose(model.loss(batch), expected)
    model.teacher_forcing = 1.0
    torch.testing.assert_close(model.loss(batch), expected)
    model.eval()
    assert model.loss_weight(batch) == int(tokens) == 10
    per_token = -model.sequence_log_prob(source, LENGTHS, targets).detach().sum() / tokens
    for batch_size in (1, 3):  # the token mean over the data set, batched either way
        loss = evaluate(model, batch, (), TrainConfig(batch_size=batch_size))["loss"]
        assert loss == pytest.approx(per_token.item(), rel=1e-5)


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="attention"):
        Seq2SeqConfig(5, 5, attention="dot")
    with pytest.raises(ValueError, match="teacher_forcing"):
        Seq2SeqConfig(5, 5, teacher_forcing=1.5)
    with pytest.raises(ValueError, match="beam"):
        _model(0, "gru", "additive").beam_search(_source(0), LENGTHS, beam=0)


# --- the synthetic task ---------------------------------------------------------------------


def _reversal_batch(strings: list[tuple[int, ...]]) -> Batch:
    """Digit strings -> Batch(source ids, lengths, reversed ids + EOS)."""
    longest = max(map(len, strings))
    source = torch.zeros(len(strings), longest, dtype=torch.long)
    targets = torch.zeros(len(strings), longest + 1, dtype=torch.long)
    for b, digits in enumerate(strings):
        source[b, : len(digits)] = torch.tensor(digits) + DIGIT
        targets[b, : len(digits)] = torch.tensor(digits[::-1]) + DIGIT
        targets[b, len(digits)] = EOS
    return Batch(source, torch.tensor([len(s) for s in strings]), targets)


@pytest.mark.slow
def test_reversing_digit_strings_is_learned_to_99_percent():
    rng = random.Random(0)
    torch.manual_seed(0)

    def digits() -> tuple[int, ...]:
        return tuple(rng.randrange(10) for _ in range(rng.randint(3, 6)))

    held_out: set[tuple[int, ...]] = set()
    while len(held_out) < 500:
        held_out.add(digits())
    config = Seq2SeqConfig(13, 13, embedding_dim=32, hidden_size=64, cell="gru", dropout=0.0)
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        strings: list[tuple[int, ...]] = []
        while len(strings) < 64:
            if (candidate := digits()) not in held_out:
                strings.append(candidate)
        loss = model.loss(_reversal_batch(strings))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    test = _reversal_batch(sorted(held_out))
    predicted = model.predict(test)  # (B, L), L may differ from the targets' T
    steps = test.targets.shape[1]
    padded = torch.zeros_like(test.targets)
    padded[:, : min(steps, predicted.shape[1])] = predicted[:, :steps]
    exact = (padded == test.targets).all(dim=1) & (predicted[:, steps:] == PAD).all(dim=1)
    assert exact.float().mean().item() >= 0.99
