"""Language and music models: sampling filters against hand-computed distributions, tied
weights, loss against the formula, step() against forward(), and reproducible generation."""

from __future__ import annotations

import math
from itertools import islice

import pytest
import torch
import torch.nn.functional as F

from rnnkit.data import Batch
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.music import MusicModel, MusicModelConfig
from rnnkit.models.sampling import (
    SamplingConfig,
    apply_temperature,
    filter_logits,
    sample_bernoulli,
    sample_token,
    top_k_filter,
    top_p_filter,
)
from rnnkit.train import TrainConfig, evaluate

torch.set_num_threads(1)


def _kept(logits: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


# --- sampling ---------------------------------------------------------------------------------


def test_temperature_divides_logits_and_zero_is_greedy():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    probs = apply_temperature(logits, 2.0).softmax(-1)
    by_hand = torch.tensor([math.exp(0.5), math.exp(1.0), math.exp(2.0)])
    torch.testing.assert_close(probs[0], by_hand / by_hand.sum())
    sharper = apply_temperature(logits, 0.5).softmax(-1)
    assert sharper[0, 2] > logits.softmax(-1)[0, 2] > probs[0, 2]
    greedy = apply_temperature(logits, 0.0).softmax(-1)
    torch.testing.assert_close(greedy[0], torch.tensor([0.0, 0.0, 1.0]))


def test_top_k_keeps_exactly_k_and_renormalises():
    logits = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0])
    filtered = top_k_filter(logits, 2)
    assert _kept(filtered) == {3, 4}
    expected = torch.tensor([0, 0, 0, math.exp(5), math.exp(4)]) / (math.exp(5) + math.exp(4))
    torch.testing.assert_close(filtered.softmax(-1), expected.float())
    ties = top_k_filter(torch.zeros(2, 20), 3)  # all equal: exactly k per row, the first k
    assert torch.isfinite(ties).nonzero()[:, 1].tolist() == [0, 1, 2, 0, 1, 2]
    assert _kept(top_k_filter(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0]), 2)) == {1, 2}
    assert torch.equal(top_k_filter(logits, 5), logits)


@pytest.mark.parametrize(
    ("p", "kept"), [(0.4, {0}), (0.79, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_set_with_enough_mass(p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    filtered = top_p_filter(probs.log(), p)
    assert _kept(filtered) == kept
    mass = sum(probs[i] for i in kept)
    expected = torch.tensor([probs[i] / mass if i in kept else 0.0 for i in range(4)])
    torch.testing.assert_close(filtered.softmax(-1), expected)


def test_top_p_of_one_keeps_every_token():
    """p = 1 is the whole distribution: a float32 running sum reaches 1.0 before the last
    tokens (1513 of 50,000 dropped before), and a far tail must stay too."""
    logits = torch.randn(1, 50_000, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    tail = torch.tensor([10.0, 0.0, -20.0, -30.0])
    assert torch.equal(top_p_filter(tail, 1.0), tail)


def test_top_p_counts_mass_equal_to_p_as_enough():
    uniform = torch.zeros(4)  # probabilities exactly 0.25 each
    assert len(_kept(top_p_filter(uniform, 0.5))) == 2
    assert len(_kept(top_p_filter(uniform, 0.51))) == 3


def test_top_p_against_brute_force_on_random_rows():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=generator) * 2  # (rows, V), shuffled order
    ps = torch.rand(200, generator=generator).tolist()
    for row, p in zip(logits, ps, strict=True):
        probs = row.double().softmax(-1).tolist()
        order = sorted(range(7), key=lambda i: -probs[i])
        size = next(k for k in range(1, 8) if sum(probs[i] for i in order[:k]) >= p - 1e-6)
        assert _kept(top_p_filter(row, p)) == set(order[:size])


def test_sample_token_follows_the_filtered_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0]).expand(40_000, 4)
    config = SamplingConfig(temperature=2.0, top_k=3)
    tokens = sample_token(logits, config, torch.Generator().manual_seed(1))
    counts = torch.bincount(tokens, minlength=4).double() / len(tokens)
    z = torch.tensor([1.0, 2.0, 3.0]).div(2.0).exp()
    expected = torch.cat([torch.zeros(1), z / z.sum()]).double()
    assert counts[0] == 0  # filtered out by top-k
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)
    greedy = sample_token(logits[:5], SamplingConfig(temperature=0), torch.Generator())
    assert greedy.tolist() == [3] * 5
    assert filter_logits(logits[:1], SamplingConfig()).equal(logits[:1])


def test_sample_bernoulli_probabilities_are_sigmoid_of_scaled_logits():
    logits = torch.tensor([-2.0, 0.0, 1.0, 3.0]).expand(40_000, 4)
    frames = sample_bernoulli(logits, 2.0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(frames.mean(0), torch.sigmoid(logits[0] / 2), atol=0.01, rtol=0)
    assert sample_bernoulli(logits[:1], 0.0, torch.Generator()).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize(
    "values", [{"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_bad_sampling_values_are_errors(values):
    with pytest.raises(ValueError):
        SamplingConfig(**values)


# --- the language model -----------------------------------------------------------------------


def _lm(cell: str = "lstm", embedding_dim: int = 8, tie: bool = True, layers: int = 2):
    torch.manual_seed(0)
    config = LanguageModelConfig(
        vocab_size=11,
        embedding_dim=embedding_dim,
        hidden_size=8,
        num_layers=layers,
        cell=cell,
        tie_weights=tie,
    )
    return LanguageModel(config).eval()


def test_tied_output_scores_against_the_embedding_matrix():
    tokens = torch.randint(1, 11, (3, 5))
    same = _lm(embedding_dim=8)
    hidden, _ = same.encoder(tokens)
    weight = same.encoder.embedding.weight  # (V, E)
    torch.testing.assert_close(same(tokens)[0], hidden @ weight.T + same.output_bias)
    projected = _lm(embedding_dim=5)
    hidden, _ = projected.encoder(tokens)
    expected = projected.projection(hidden) @ projected.encoder.embedding.weight.T
    torch.testing.assert_close(projected(tokens)[0], expected + projected.output_bias)
    inputs, targets = torch.full((1, 4), 1), torch.full((1, 4), 2)  # token 2 is never an input
    same.loss(Batch(inputs, None, targets))[0].backward()
    assert same.encoder.embedding.weight.grad[2].abs().sum() > 0  # reached through the output
    untied = _lm(tie=False)
    names = {name for name, _ in untied.named_parameters()} - {
        name for name, _ in same.named_parameters()
    }
    assert names == {"output.weight", "output.bias"}
    assert untied.output.weight.shape == (11, 8)


def test_loss_is_the_mean_cross_entropy_and_state_carries_over():
    model = _lm()
    tokens = torch.randint(1, 11, (2, 9))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    loss, _ = model.loss(Batch(inputs, None, targets))
    logits, _ = model(inputs)
    log_probs = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(loss, -log_probs.mean())
    first, state = model.loss(Batch(inputs[:, :3], None, targets[:, :3]))
    second, _ = model.loss(Batch(inputs[:, 3:], None, targets[:, 3:]), state)
    torch.testing.assert_close((3 * first + 5 * second) / 8, loss)  # windows = one unbroken pass


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_reproduces_forward(cell):
    model = _lm(cell)
    tokens = torch.randint(1, 11, (3, 6))
    logits, final = model(tokens)
    state = None
    for t in range(6):
        step_logits, state = model.step(tokens[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t])
    for ours, theirs in zip(
        state if isinstance(state, tuple) else (state,),
        final if isinstance(final, tuple) else (final,),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs)


def test_generate_is_reproducible_and_greedy_matches_rerunning_from_scratch():
    model = _lm()
    config = SamplingConfig(temperature=1.0, top_p=0.9)

    def draw(seed: int, n: int = 30) -> list[int]:
        tokens = model.generate([3, 4], config, torch.Generator().manual_seed(seed))
        return list(islice(tokens, n))

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    greedy = model.generate([3, 4], SamplingConfig(temperature=0), torch.Generator())
    ours = list(islice(greedy, 12))
    sequence = [3, 4]
    for _ in range(12):  # the reference: run the whole sequence again for every token
        logits, _ = model(torch.tensor([sequence]))
        sequence.append(int(logits[0, -1].argmax()))
    assert ours == sequence[2:]
    with pytest.raises(ValueError, match="prompt"):
        next(model.generate([], config, torch.Generator()))


def test_bad_language_model_config_is_an_error():
    with pytest.raises(ValueError, match="cell"):
        LanguageModelConfig(vocab_size=5, cell="transformer")
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModelConfig(vocab_size=0)


# --- the music model --------------------------------------------------------------------------


def _music(cell: str = "lstm") -> MusicModel:
    torch.manual_seed(0)
    return MusicModel(MusicModelConfig(num_pitches=6, hidden_size=5, cell=cell)).eval()


def test_music_loss_is_bernoulli_nll_per_true_frame():
    model = _music()
    generator = torch.Generator().manual_seed(3)
    frames = (torch.rand(2, 4, 6, generator=generator) < 0.3).float()  # (B, T, P)
    inputs = torch.cat([torch.zeros(2, 1, 6), frames[:, :-1]], dim=1)
    lengths = torch.tensor([4, 2])
    loss = model.loss(Batch(inputs, lengths, frames))
    total, count = 0.0, 0
    for b in range(2):  # the formula, one frame at a time, over the true frames only
        p = torch.sigmoid(model(inputs[b : b + 1, : lengths[b]])[0][0]).detach().double()
        x = frames[b, : lengths[b]].double()
        total += float(-(x * p.log() + (1 - x) * (1 - p).log()).sum())
        count += int(lengths[b])
    assert count == 6
    assert math.isclose(loss.item(), total / count, rel_tol=1e-5)
    data = Batch(inputs, lengths, frames)
    assert model.loss_weight(data) == count
    for batch_size in (1, 2):  # evaluate: the mean over all true frames, however batched
        got = evaluate(model, data, (), TrainConfig(batch_size=batch_size))
        assert math.isclose(got["loss"], total / count, rel_tol=1e-5)
    probs = model.predict(Batch(inputs, lengths, frames))
    torch.testing.assert_close(probs, torch.sigmoid(model(inputs, lengths)[0]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_music_step_reproduces_forward_and_generation_is_seeded(cell):
    model = _music(cell)
    frames = (torch.rand(2, 5, 6) < 0.5).float()
    logits, _ = model(frames)
    state = None
    for t in range(5):
        step_logits, state = model.step(frames[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t])

    def draw(seed: int) -> torch.Tensor:
        sampled = model.generate(frames[0], 1.0, torch.Generator().manual_seed(seed))
        return torch.stack(list(islice(sampled, 20)))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    assert set(draw(1).unique().tolist()) <= {0.0, 1.0}
    double = _music(cell).double()  # a float64 model generates too (float32 frames failed)
    double.load_state_dict(model.state_dict())
    sampled = double.generate(frames[0].double(), 0.0, torch.Generator())
    expected = model.generate(frames[0], 0.0, torch.Generator())  # T = 0: the sure units
    assert torch.equal(
        torch.stack(list(islice(sampled, 8))), torch.stack(list(islice(expected, 8)))
    )


def test_music_loss_gradient_matches_binary_cross_entropy():
    model = _music()
    frames = (torch.rand(1, 3, 6) < 0.5).float()
    inputs = torch.cat([torch.zeros(1, 1, 6), frames[:, :-1]], dim=1)
    loss = model.loss(Batch(inputs, None, frames))
    reference = F.binary_cross_entropy_with_logits(model(inputs)[0], frames, reduction="sum") / 3
    torch.testing.assert_close(loss, reference)
