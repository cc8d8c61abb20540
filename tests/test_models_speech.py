"""The CTC speech model (front end lengths, loss, decoding) and the error rates CER / WER."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit import Batch
from rnnkit.models.speech import (
    SpeechConfig,
    SpeechModel,
    cer,
    conv_output_lengths,
    edit_distance,
    wer,
)


def tiny_batch(seed: int = 0) -> Batch:
    """Three utterances of 10-12 frames, 6 features, labels 0..2 padded with -1."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(3, 12, 6, generator=generator)
    lengths = torch.tensor([12, 10, 11])
    targets = torch.tensor([[0, 1, 2], [2, 2, -1], [1, -1, -1]])
    return Batch(inputs, lengths, targets)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (4, 3), (1, 1)])
def test_front_end_lengths_match_the_formula(kernel: int, stride: int) -> None:
    config = SpeechConfig(
        num_features=6, num_labels=3, conv_channels=4, conv_kernel=kernel, conv_stride=stride
    )
    model = SpeechModel(config)
    for frames in range(1, 14):
        conv_out = model.front_end(torch.zeros(1, 6, frames))  # (1, K, L')
        expected = (frames + 2 * (kernel // 2) - kernel) // stride + 1
        computed = model.output_lengths(torch.tensor([frames]))
        assert conv_out.shape[-1] == expected == int(computed)
    lengths = torch.tensor([9, 10, 11])
    assert conv_output_lengths(lengths, 5, 2, 2).tolist() == [5, 5, 6]


@pytest.mark.parametrize(("cell", "conv_channels"), [("lstm", 8), ("gru", 0)])
def test_loss_is_finite_and_decreases(cell: str, conv_channels: int) -> None:
    torch.manual_seed(0)
    config = SpeechConfig(
        num_features=6,
        num_labels=3,
        conv_channels=conv_channels,
        conv_kernel=3,
        conv_stride=2,
        hidden_size=16,
        num_layers=1,
        cell=cell,
        dropout=0.0,
    )
    model = SpeechModel(config)
    batch = tiny_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = model.loss(batch)
        assert math.isfinite(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    log_probs, lengths = model(batch.inputs, batch.lengths)
    expected = model.output_lengths(batch.lengths)
    assert log_probs.shape == (int(expected.max()), 3, 4)  # (T', B, V + 1)
    assert lengths.tolist() == expected.tolist()
    model.eval()
    with torch.no_grad():
        predicted = model.predict(batch)
        beamed = model.beam_search(batch, beam_width=4)
    assert len(predicted) == len(beamed) == 3
    assert all(0 <= label < 3 for labels in predicted + beamed for label in labels)
    assert predicted == [[0, 1, 2], [2, 2], [1]]  # the tiny batch is learnt


def test_padding_does_not_change_a_sequence() -> None:
    torch.manual_seed(0)
    model = SpeechModel(SpeechConfig(num_features=6, num_labels=3, conv_channels=4, dropout=0.0))
    batch = tiny_batch()
    log_probs, lengths = model(batch.inputs, batch.lengths)
    alone, _ = model(batch.inputs[1:2, :10], None)  # the second utterance, without padding
    torch.testing.assert_close(log_probs[: int(lengths[1]), 1], alone[:, 0])


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="cell"):
        SpeechConfig(num_features=6, num_labels=3, cell="rnn")
    with pytest.raises(ValueError, match="num_labels"):
        SpeechConfig(num_features=6, num_labels=0)


def test_edit_distance_by_hand() -> None:
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2  # -f, +n
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0


def test_cer_and_wer_by_hand() -> None:
    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert cer(["abc", "de"], ["abc", "d"]) == pytest.approx(1 / 5)  # one deletion in 5 chars
    assert wer(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 3)  # one insertion
    assert wer(["one two three", "four"], ["one too three", "for five"]) == pytest.approx(3 / 4)
    assert wer(["seven"], ["seven"]) == 0.0
    with pytest.raises(ValueError, match="references"):
        cer(["a"], [])
