"""The figures of `rnnkit.plots`: what they draw is the data they were given."""

import numpy as np
import pytest

from rnnkit import plots


def test_attention_map_draws_the_weights_with_token_labels(tmp_path):
    weights = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    fig = plots.plot_attention(weights, ["the", "cat", "<eos>"], ["el", "gato"])
    (ax, _colorbar) = fig.axes
    (image,) = ax.images
    np.testing.assert_array_equal(image.get_array(), weights)
    assert image.get_clim() == (0.0, 1.0)  # a fixed scale, comparable between figures
    assert [t.get_text() for t in ax.get_xticklabels()] == ["the", "cat", "<eos>"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["el", "gato"]
    plots.save_png(fig, tmp_path / "attention.png")
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_map_refuses_weights_that_do_not_match_the_tokens():
    with pytest.raises(ValueError, match=r"expected \(output tokens, source tokens\) = \(2, 3\)"):
        plots.plot_attention(np.zeros((3, 2)), ["a", "b", "c"], ["x", "y"])


def test_loss_curves_switch_to_a_log_scale_over_a_tenfold_range():
    history = [{"epoch": e, "train_loss": 10.0 / e**2, "val_loss": 12.0 / e**2} for e in (1, 2, 4)]
    (ax,) = plots.plot_losses(history).axes
    assert ax.get_yscale() == "log"
    train, val = ax.get_lines()
    np.testing.assert_allclose(train.get_ydata(), [10.0, 2.5, 0.625])
    np.testing.assert_allclose(val.get_xdata(), [1, 2, 4])
    flat = [{"epoch": e, "train_loss": 1.0 + e / 10} for e in (1, 2)]
    assert plots.plot_losses(flat).axes[0].get_yscale() == "linear"


def test_one_epoch_is_one_whole_tick():
    """After a single epoch the axis shows that epoch, not fractions around it (0.95..1.05)."""
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "val_perplexity": 12.2}]
    for figure in (plots.plot_losses(history), plots.plot_metrics(history, ["perplexity"])):
        ax = figure.axes[0]
        figure.canvas.draw()
        assert list(ax.get_xticks()) == [1]
    assert plots.plot_metrics(history, ["perplexity"]).axes[0].get_ylabel() == "perplexity"


def test_gradient_flow_draws_exact_zeros_at_the_floor():
    (ax,) = plots.plot_gradient_flow({"rnn": [0.0, 1e-3, 1.0]}, title="t").axes
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [1e-45, 1e-3, 1.0])
    assert ax.get_yscale() == "log"


def test_forecast_figure_draws_actuals_forecasts_and_the_quantile_band(tmp_path):
    times = np.arange(10)
    actual = np.stack([np.arange(10.0), -np.arange(10.0)], axis=1)  # (T, C)
    future = np.random.default_rng(0).normal(size=(3, 2, 3))  # (n, C, Q)
    tested = np.random.default_rng(1).normal(size=(2, 2, 3))
    fig = plots.plot_forecast(
        times, actual, ["up", "down"], 7,
        [("forecast", np.arange(10, 13), future), ("test", np.arange(7, 9), tested)],
        point=1, band="0.1-0.9 quantiles",
    )  # fmt: skip
    assert len(fig.axes) == 2
    for k, ax in enumerate(fig.axes):
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_array_equal(lines["actual"].get_ydata(), actual[:, k])
        np.testing.assert_array_equal(lines["forecast"].get_ydata(), future[:, k, 1])
        np.testing.assert_array_equal(lines["test"].get_xdata(), [7, 8])
        assert ax.get_title() == ["up", "down"][k]
        assert len(ax.collections) == 2  # a quantile band per forecast
    assert fig.axes[-1].get_xlabel() == "step"  # plain steps; dates are "time"
    dated = plots.plot_forecast(
        np.arange("2000-01", "2000-11", dtype="datetime64[M]"), actual[:, :1], ["up"], 7,
        [], point=0,
    )  # fmt: skip
    assert dated.axes[-1].get_xlabel() == "time"
    plots.save_png(fig, tmp_path / "forecast.png")
