"""Classifier and TextEncoder: pooling over valid steps only, against manual computations.

Each pooling is compared with a loop over the samples that slices every sequence to its own
length; padding never reaches the result (changing padded tokens changes nothing). The encoder's
step() reproduces forward(), and copy_encoder_weights copies exactly what it says.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from rnnkit.data import Batch
from rnnkit.models.classifier import (
    AttentionPooling,
    Classifier,
    ClassifierConfig,
    pool_last,
    pool_max,
    pool_mean,
)
from rnnkit.models.encoder import TextEncoder, copy_encoder_weights

torch.set_num_threads(1)
LENGTHS = torch.tensor([5, 2, 7, 1])  # unsorted, one full, one of a single step


def _outputs(features: int = 6, seed: int = 0) -> torch.Tensor:
    """Random (B, T, F) outputs with garbage (not zeros) past each length."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(LENGTHS), int(LENGTHS.max()), features, generator=generator)


def test_mean_and_max_pool_only_the_valid_steps():
    outputs = _outputs()
    mean = torch.stack([outputs[b, :n].mean(dim=0) for b, n in enumerate(LENGTHS.tolist())])
    high = torch.stack([outputs[b, :n].max(dim=0).values for b, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(pool_mean(outputs, LENGTHS), mean)
    torch.testing.assert_close(pool_max(outputs, LENGTHS), high)
    torch.testing.assert_close(pool_mean(outputs, None), outputs.mean(dim=1))


def test_last_pooling_takes_each_direction_where_it_ends():
    outputs = _outputs(features=6)  # D*H = 2*3
    forward_end = torch.stack([outputs[b, n - 1, :3] for b, n in enumerate(LENGTHS.tolist())])
    expected = torch.cat([forward_end, outputs[:, 0, 3:]], dim=-1)
    torch.testing.assert_close(pool_last(outputs, LENGTHS, bidirectional=True), expected)
    unidirectional = torch.stack([outputs[b, n - 1] for b, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(pool_last(outputs, LENGTHS, bidirectional=False), unidirectional)


def test_last_pooling_equals_the_final_states_of_a_bidirectional_lstm():
    encoder = TextEncoder(30, 4, 3, cell="lstm", bidirectional=True).eval()
    tokens = torch.randint(1, 30, (len(LENGTHS), 7))
    outputs, (h_n, _) = encoder(tokens, LENGTHS)
    pooled = pool_last(outputs, LENGTHS, bidirectional=True)
    torch.testing.assert_close(pooled, torch.cat([h_n[0], h_n[1]], dim=-1))


def test_attention_weights_sum_to_one_over_valid_steps_and_zero_on_padding():
    torch.manual_seed(0)
    attention = AttentionPooling(6)
    outputs = _outputs()
    weights = attention.weights(outputs, LENGTHS)  # (B, T)
    valid = torch.arange(7) < LENGTHS[:, None]
    assert (weights[~valid] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(LENGTHS)))
    for b, n in enumerate(LENGTHS.tolist()):  # the softmax of the scores of the valid steps
        scores = attention.score(torch.tanh(attention.proj(outputs[b, :n]))).squeeze(-1)
        torch.testing.assert_close(weights[b, :n], scores.softmax(dim=0))
        torch.testing.assert_close(attention(outputs, LENGTHS)[b], weights[b, :n] @ outputs[b, :n])


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_tokens_never_change_the_logits(pooling, cell):
    torch.manual_seed(1)
    config = ClassifierConfig(40, 3, embedding_dim=5, hidden_size=4, cell=cell, pooling=pooling)
    model = Classifier(config).eval()
    tokens = torch.randint(1, 40, (len(LENGTHS), 7))
    garbage = tokens.clone()
    padding = torch.arange(7) >= LENGTHS[:, None]
    tokens[padding] = 0
    garbage[padding] = 17
    logits = model(tokens, LENGTHS)
    torch.testing.assert_close(model(garbage, LENGTHS), logits)
    alone = torch.cat([model(tokens[b : b + 1, :n]) for b, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(alone, logits, rtol=1e-5, atol=1e-6)  # as if there were no batch


def test_loss_predict_and_probabilities_agree_with_the_logits():
    torch.manual_seed(2)
    model = Classifier(ClassifierConfig(vocab_size=20, num_classes=3, hidden_size=4)).eval()
    tokens = torch.randint(1, 20, (len(LENGTHS), 7))
    batch = Batch(tokens, LENGTHS, torch.tensor([0, 2, 1, 2]))
    logits = model(tokens, LENGTHS)
    torch.testing.assert_close(model.loss(batch), F.cross_entropy(logits, batch.targets))
    assert model.predict(batch).tolist() == logits.argmax(dim=-1).tolist()
    probabilities = model.probabilities(batch)
    torch.testing.assert_close(probabilities.sum(dim=-1), torch.ones(len(LENGTHS)))
    torch.testing.assert_close(probabilities, logits.softmax(dim=-1))


def test_attention_weights_need_attention_pooling_and_bad_configs_fail():
    model = Classifier(ClassifierConfig(vocab_size=20, num_classes=2, pooling="mean"))
    with pytest.raises(ValueError, match="pooling='attention'"):
        model.attention_weights(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pooling must be one of"):
        ClassifierConfig(vocab_size=20, num_classes=2, pooling="sum")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ClassifierConfig(vocab_size=20, num_classes=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_encoder_step_reproduces_forward(cell):
    torch.manual_seed(3)
    encoder = TextEncoder(25, 6, 5, num_layers=2, cell=cell).eval()
    tokens = torch.randint(1, 25, (3, 9))
    outputs, final = encoder(tokens)
    state, steps = None, []
    for t in range(tokens.shape[1]):
        output, state = encoder.step(tokens[:, t], state)
        steps.append(output)
    torch.testing.assert_close(torch.stack(steps, dim=1), outputs)
    torch.testing.assert_close(state, final)
    assert encoder.output_size == 5


def test_copy_encoder_weights_copies_every_encoder_tensor_and_nothing_else():
    torch.manual_seed(4)

    class Source(torch.nn.Module):  # a language model's shape: encoder + its own head
        def __init__(self) -> None:
            super().__init__()
            self.encoder = TextEncoder(30, 8, 8, num_layers=2, cell="gru")
            self.head = torch.nn.Linear(8, 30)

    source = Source()
    config = ClassifierConfig(30, 2, embedding_dim=8, hidden_size=8, num_layers=2, cell="gru")
    target = Classifier(dataclasses.replace(config, bidirectional=False))
    head_before = target.head.weight.clone()
    copied = copy_encoder_weights(source, target)
    expected = {f"encoder.{k}": v for k, v in source.encoder.state_dict().items()}
    assert sorted(copied) == sorted(expected)
    weights = target.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(target.head.weight, head_before)  # the head is untouched


def test_copy_encoder_weights_refuses_a_different_encoder():
    source = Classifier(ClassifierConfig(vocab_size=30, num_classes=2, bidirectional=False))
    for changed in (
        {"hidden_size": 64},
        {"cell": "gru"},
        {"vocab_size": 31},
        {"bidirectional": True},
    ):
        values = {"vocab_size": 30, "num_classes": 2, "bidirectional": False, **changed}
        with pytest.raises(ValueError, match="cannot copy the encoder"):
            copy_encoder_weights(source, Classifier(ClassifierConfig(**values)))


def test_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cell must be one of"):
        TextEncoder(10, 4, 4, cell="transformer")
    with pytest.raises(ValueError, match="hidden_size must be an int >= 1"):
        TextEncoder(10, 4, 0)
