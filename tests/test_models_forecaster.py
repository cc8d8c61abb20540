"""The Forecaster model: pinball loss by hand, direct vs autoregressive shapes, teacher forcing,
the residual connection, and quantile outputs that learn quantiles."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data import Batch
from rnnkit.models.forecaster import Forecaster, ForecasterConfig, pinball_loss

torch.set_num_threads(1)


def test_pinball_loss_equals_hand_computation():
    predictions = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])  # (N=2, Q=3)
    targets = torch.tensor([2.5, -1.0])
    # target 2.5, e = y - y_q = (1.5, 0.5, -0.5):   0.1*1.5, 0.5*0.5, (0.9-1)*(-0.5) = .15 .25 .05
    # target -1,  e = (-1, -1, -1):                 0.9*1,   0.5*1,   0.1*1          = .9  .5  .1
    expected = (0.15 + 0.25 + 0.05 + 0.9 + 0.5 + 0.1) / 6
    loss = pinball_loss(predictions, targets, (0.1, 0.5, 0.9))
    assert float(loss) == pytest.approx(expected, abs=1e-7)


def make(mode: str, quantiles=(), **kw) -> Forecaster:
    torch.manual_seed(0)
    config = ForecasterConfig(
        num_values=2, horizon=5, num_covariates=3, target_columns=(1,), mode=mode,
        hidden_size=16, quantiles=quantiles, **kw,
    )  # fmt: skip
    return Forecaster(config).eval()


def windows(batch: int = 4, past: int = 7, horizon: int = 5) -> Batch:
    torch.manual_seed(1)
    return Batch(
        inputs={"past": torch.randn(batch, past, 2 + 3), "future": torch.randn(batch, horizon, 3)},
        targets=torch.randn(batch, horizon, 1),
    )


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
@pytest.mark.parametrize("quantiles", [(), (0.1, 0.5, 0.9)])
def test_shapes_of_both_modes(mode, quantiles):
    model, batch = make(mode, quantiles), windows()
    out = model(batch.inputs["past"], batch.inputs["future"])
    assert out.shape == (4, 5, 1, max(1, len(quantiles)))  # (B, H, D_out, Q)
    assert model.predict(batch).shape == (4, 5, 1)
    torch.testing.assert_close(model.predict(batch), out[..., model.config.point_index])
    model.train()
    loss = model.loss(batch)
    loss.backward()
    assert loss.dim() == 0 and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_quantiles_never_cross(mode):
    model, batch = make(mode, (0.1, 0.3, 0.5, 0.7, 0.9)), windows(batch=64)
    with torch.no_grad():
        model.head.weight.normal_(0, 3)  # large random weights: unsorted outputs would cross
        out = model(batch.inputs["past"], batch.inputs["future"])  # (B, H, 1, 5)
    assert (out.diff(dim=-1) >= 0).all()


def test_direct_needs_exactly_its_horizon_autoregressive_takes_any():
    batch = windows(horizon=8)
    with pytest.raises(ValueError, match="exactly 5 steps"):
        make("direct")(batch.inputs["past"], batch.inputs["future"])
    assert make("autoregressive")(batch.inputs["past"], batch.inputs["future"]).shape[1] == 8


@pytest.mark.parametrize("quantiles", [(), (0.2, 0.5, 0.8)])
def test_teacher_forcing_with_own_forecasts_equals_free_running(quantiles):
    model, batch = make("autoregressive", quantiles), windows()
    with torch.no_grad():
        free = model(batch.inputs["past"], batch.inputs["future"])  # (B, H, 1, Q)
        own = free[..., model.config.point_index]  # what the decoder fed itself
        forced = model(batch.inputs["past"], batch.inputs["future"], teacher=own)
    torch.testing.assert_close(forced, free)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_residual_with_a_zero_head_repeats_the_last_value(mode):
    model, batch = make(mode), windows()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        out = model.predict(batch)  # (B, H, 1)
    last = batch.inputs["past"][:, -1, 1]  # target column 1 of the last past step
    torch.testing.assert_close(out, last[:, None, None].expand(4, 5, 1))


def test_quantile_outputs_learn_the_quantiles_of_the_noise():
    torch.manual_seed(0)
    config = ForecasterConfig(
        num_values=1, horizon=1, hidden_size=4, quantiles=(0.1, 0.5, 0.9), residual=False
    )
    model = Forecaster(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    past, future = torch.zeros(512, 3, 1), torch.zeros(512, 1, 0)
    targets = torch.randn(512, 1, 1)  # N(0, 1): quantiles -1.28, 0, 1.28
    for _ in range(300):
        optimizer.zero_grad()
        model.loss(Batch(inputs={"past": past, "future": future}, targets=targets)).backward()
        optimizer.step()
    with torch.no_grad():
        learned = model(past[:1], future[:1])[0, 0, 0]
    expected = torch.quantile(targets.flatten(), torch.tensor([0.1, 0.5, 0.9]))
    torch.testing.assert_close(learned, expected, atol=0.1, rtol=0)


def test_config_checks():
    with pytest.raises(ValueError, match="quantiles must increase"):
        ForecasterConfig(num_values=1, horizon=2, quantiles=(0.5, 0.1))
    with pytest.raises(ValueError, match="mode must be"):
        ForecasterConfig(num_values=1, horizon=2, mode="sideways")
    with pytest.raises(ValueError, match="target_columns"):
        ForecasterConfig(num_values=1, horizon=2, target_columns=(1,))
    assert ForecasterConfig(num_values=3, horizon=1).outputs == (0, 1, 2)
    assert ForecasterConfig(num_values=1, horizon=1, quantiles=(0.1, 0.4, 0.9)).point_index == 1
