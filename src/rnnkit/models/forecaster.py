"""`Forecaster`: an RNN over a window of the past that forecasts the next H steps of a series.

    past (B, L, D + C) ─ encoder RNN ─ state ─┬─ direct:         linear head -> all H steps at once
                                              └─ autoregressive: decoder RNN, one step at a time,
                                                 fed its previous value (true one in training)

The inputs are values already scaled (`rnnkit.data.scalers`) and covariates known in advance
(calendar features); `rnnkit.data.SlidingWindows` makes the batches:

    batch.inputs = {"past": (B, L, D + C), "future": (B, H, C)},  batch.targets = (B, H, D_out)

Every step's output is Q numbers per forecast column: Q = 1 (a point forecast, trained with
the squared error) or the Q quantiles of `quantiles` (trained with the pinball loss, sorted so
that they never cross, giving prediction intervals). With `residual` the model forecasts the
change from the last known value, which lets it follow a trend beyond the range of the training
data. Reading series, scaling and metrics on the original scale are `rnnkit.tasks.forecast`'s
job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice, check_counts
from rnnkit.models.encoder import CELLS
from rnnkit.models.tagger import last_layer_state, make_rnn

MODES = ("direct", "autoregressive")


@dataclass(frozen=True)
class ForecasterConfig:
    """Hyper-parameters of a `Forecaster`."""

    num_values: int  # D: value columns of the series in each past step
    horizon: int  # H: steps forecast (direct mode: exactly these; autoregressive: any number)
    num_covariates: int = 0  # C: covariate columns, given for past and future steps
    target_columns: tuple[int, ...] = ()  # value columns to forecast, D_out of them (): all D
    mode: str = "direct"  # "direct" (one head emits all H steps) or "autoregressive"
    cell: str = "lstm"  # "lstm", "gru" or "rnn"
    hidden_size: int = 64  # RNN units
    num_layers: int = 1  # stacked RNN layers (encoder and decoder alike)
    dropout: float = 0.0  # between stacked RNN layers
    quantiles: tuple[float, ...] = ()  # increasing, in (0, 1): pinball loss; (): point + MSE
    residual: bool = True  # forecast the change from the last known value

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_columns", tuple(self.target_columns))  # JSON lists
        object.__setattr__(self, "quantiles", tuple(self.quantiles))
        check_counts(self, "num_values", "horizon", "hidden_size", "num_layers")
        check_counts(self, "num_covariates", minimum=0)
        if any(not 0 <= c < self.num_values for c in self.target_columns):
            raise ValueError(f"target_columns {self.target_columns} must be in [0, D)")
        check_choice("mode", self.mode, MODES)
        check_choice("cell", self.cell, CELLS)
        q = self.quantiles
        if any(not 0 < v < 1 for v in q) or any(a >= b for a, b in zip(q, q[1:], strict=False)):
            raise ValueError(f"quantiles must increase strictly inside (0, 1), got {q}")

    @property
    def outputs(self) -> tuple[int, ...]:
        """The forecast columns: target_columns, or every value column."""
        return self.target_columns or tuple(range(self.num_values))

    @property
    def point_index(self) -> int:
        """Which of the Q outputs is the point forecast (see `point_index`)."""
        return point_index(self.quantiles)


def point_index(quantiles: tuple[float, ...]) -> int:
    """The output that is the point forecast: the quantile nearest the median (0: no quantiles)."""
    return min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5)) if quantiles else 0


def pinball_loss(predictions: Tensor, targets: Tensor, quantiles: tuple[float, ...]) -> Tensor:
    """Mean quantile (pinball) loss: with e = y - y_q, max(q * e, (q - 1) * e).

    predictions (..., Q), targets (...). Minimising it in y_q gives the q-quantile of y.
    """
    q = predictions.new_tensor(quantiles)  # (Q,)
    error = targets[..., None] - predictions  # (..., Q)
    return torch.maximum(q * error, (q - 1) * error).mean()


class Forecaster(nn.Module):
    """Encoder RNN over the past window; direct head or autoregressive decoder for H steps.

    forward(past (B, L, D + C), future (B, H', C), teacher (B, H', D_out) or None)
        -> (B, H', D_out, Q) forecasts in the scaled units of the inputs. H' = H in direct
        mode; any H' >= 1 autoregressively, where `teacher` (the true values) replaces the
        model's own previous forecast as the next step's input (teacher forcing).
    loss(batch) -> scalar (teacher forcing while training); predict(batch) -> (B, H, D_out),
    the point forecast.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d_out, q = len(c.outputs), max(1, len(c.quantiles))
        self.encoder = make_rnn(
            c.cell, c.num_values + c.num_covariates, c.hidden_size, c.num_layers, False, c.dropout
        )
        if c.mode == "direct":
            self.head = nn.Linear(
                c.hidden_size + c.horizon * c.num_covariates, c.horizon * d_out * q
            )
            self.decoder = None
        else:
            self.decoder = make_rnn(
                c.cell, d_out + c.num_covariates, c.hidden_size, c.num_layers, False, c.dropout
            )
            self.head = nn.Linear(c.hidden_size, d_out * q)
        self.register_buffer("_outputs", torch.tensor(c.outputs), persistent=False)

    def forward(self, past: Tensor, future: Tensor, teacher: Tensor | None = None) -> Tensor:
        c = self.config
        if (
            past.shape[-1] != c.num_values + c.num_covariates
            or future.shape[-1] != c.num_covariates
        ):
            raise ValueError(
                f"past must have D + C = {c.num_values + c.num_covariates} features and future "
                f"C = {c.num_covariates}; got {tuple(past.shape)} and {tuple(future.shape)}"
            )
        _, state = self.encoder(past)  # final state: (num_layers, B, H) (LSTM: a pair)
        last = past[:, -1, self._outputs]  # (B, D_out) the last known values
        if self.decoder is None:
            return self._direct(state, future, last)
        return self._autoregressive(state, future, last, teacher)

    def _direct(self, state: Tensor | tuple[Tensor, ...], future: Tensor, last: Tensor) -> Tensor:
        c = self.config
        if future.shape[1] != c.horizon:
            raise ValueError(
                f"direct mode forecasts exactly {c.horizon} steps; future has {future.shape[1]}"
            )
        h = last_layer_state(state, directions=1)  # (B, H_hidden)
        features = torch.cat([h, future.flatten(1)], dim=1)  # (B, H_hidden + H*C)
        out = self._quantiles(self.head(features), (len(h), c.horizon))  # (B, H, D_out, Q)
        return out + last[:, None, :, None] if c.residual else out

    def _autoregressive(
        self,
        state: Tensor | tuple[Tensor, ...],
        future: Tensor,
        last: Tensor,
        teacher: Tensor | None,
    ) -> Tensor:
        c = self.config
        steps = future.shape[1]
        if teacher is not None:  # all inputs known: one pass over the horizon
            previous = torch.cat([last[:, None], teacher[:, :-1]], dim=1)  # (B, H', D_out)
            h, _ = self.decoder(torch.cat([previous, future], dim=-1), state)  # (B, H', H_hidden)
            out = self._quantiles(self.head(h), (len(h), steps))  # (B, H', D_out, Q)
            return out + previous[..., None] if c.residual else out
        outputs = []
        value = last  # (B, D_out) the input of the next step
        for k in range(steps):
            h_k, state = self.decoder.step(torch.cat([value, future[:, k]], dim=-1), state)
            out = self._quantiles(self.head(h_k), (len(h_k),))  # (B, D_out, Q)
            out = out + value[..., None] if c.residual else out
            outputs.append(out)
            value = out[..., c.point_index]  # fed back: the point forecast
        return torch.stack(outputs, dim=1)  # (B, H', D_out, Q)

    def _quantiles(self, raw: Tensor, leading: tuple[int, ...]) -> Tensor:
        """Head outputs -> (*leading, D_out, Q), sorted along Q so that quantiles never cross
        (the monotone rearrangement of Chernozhukov, Fernandez-Val and Galichon, 2010)."""
        out = raw.reshape(*leading, len(self.config.outputs), -1)
        return out.sort(dim=-1).values if self.config.quantiles else out

    def loss(self, batch: Batch) -> Tensor:
        past, future = batch.inputs["past"], batch.inputs["future"]
        teacher = batch.targets if self.training and self.decoder is not None else None
        forecasts = self(past, future, teacher)  # (B, H, D_out, Q)
        if self.config.quantiles:
            return pinball_loss(forecasts, batch.targets, self.config.quantiles)
        return F.mse_loss(forecasts[..., 0], batch.targets)

    def predict(self, batch: Batch) -> Tensor:
        forecasts = self(batch.inputs["past"], batch.inputs["future"])  # (B, H, D_out, Q)
        return forecasts[..., self.config.point_index]  # (B, H, D_out)
