"""Gradient-flow diagnostics: ||dL/dh_t|| is right, and it vanishes for the Elman RNN."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import LSTM, RNN
from rnnkit.train import hidden_gradient_norms

torch.set_num_threads(1)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gradient_flow.py"


def _example():
    spec = importlib.util.spec_from_file_location("gradient_flow_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_norms_match_the_backward_recursion_written_out():
    torch.manual_seed(0)
    layer = RNN(3, 4, batch_first=True, dtype=torch.float64)
    inputs = torch.randn(2, 6, 3, dtype=torch.float64)
    target = torch.randn(2, 4, dtype=torch.float64)
    norms = hidden_gradient_norms(layer, inputs, lambda out: (out[:, -1] - target).pow(2).sum())

    outputs, _ = layer(inputs)  # (B, T, H); h_t = tanh(W_ih x_t + b + W_hh h_{t-1} + b)
    grad = 2 * (outputs[:, -1] - target)  # dL/dh_{T-1}
    expected = [grad.norm()]
    for t in range(inputs.shape[1] - 1, 0, -1):  # dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh
        grad = (grad * (1 - outputs[:, t] ** 2)) @ layer.weight_hh_l0
        expected.append(grad.norm())
    torch.testing.assert_close(norms, torch.stack(expected[::-1]).detach())
    assert layer.weight_hh_l0.grad is None  # parameter gradients are left alone


def test_elman_gradient_vanishes_orders_of_magnitude_faster_than_the_lstm():
    norms = _example().gradient_flow_norms(seq_len=100)
    ratio = {label: float(values[0] / values[-1]) for label, values in norms.items()}
    elman, lstm = ratio["Elman RNN (tanh)"], ratio["LSTM, forget_bias=1"]
    assert elman < 1e-15  # dL/dh_0 is a vanishing fraction of dL/dh_T
    assert elman < 1e-6 * lstm  # at least six orders of magnitude apart
    assert all(torch.isfinite(values).all() for values in norms.values())


def test_the_example_writes_its_png(tmp_path, monkeypatch, capsys):
    out = tmp_path / "flow.png"
    monkeypatch.setattr(sys, "argv", ["gradient_flow.py", "--seq-len", "30", "--out", str(out)])
    _example().main()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Elman RNN (tanh)" in capsys.readouterr().out


def test_diagnostics_reject_layers_they_cannot_unroll():
    with pytest.raises(ValueError, match="batch_first=True"):
        hidden_gradient_norms(LSTM(2, 3), torch.zeros(1, 4, 2), lambda out: out.sum())
    with pytest.raises(ValueError, match="unidirectional"):
        layer = LSTM(2, 3, batch_first=True, bidirectional=True)
        hidden_gradient_norms(layer, torch.zeros(1, 4, 2), lambda out: out.sum())
