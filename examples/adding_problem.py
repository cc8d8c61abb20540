"""Train a small rnnkit.LSTM on the adding problem and watch the loss fall below 1/6.

The adding problem (Hochreiter & Schmidhuber 1997): two marked values in a sequence of random
numbers; the target is their sum. Always answering the mean gives an MSE of 1/6.

    python examples/adding_problem.py --steps 50 --iterations 600
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import rnnkit
from rnnkit.data.synthetic import ADDING_BASELINE_MSE, adding_problem


class AddingModel(nn.Module):
    """LSTM encoder, then y = W_y h_T + c on the last state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.rnn = rnnkit.LSTM(2, hidden_size, batch_first=True, init="orthogonal", forget_bias=1.0)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.rnn(inputs)  # h_n: (1, B, H)
        return self.head(h_n[-1]).squeeze(-1)  # (B,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="sequence length T")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    parser.add_argument("--iterations", type=int, default=600, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=64, help="sequences per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = AddingModel(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    validation = adding_problem(1000, args.steps, seed=args.seed + 1)
    print(
        f"adding problem, T={args.steps}; predicting the mean gives MSE {ADDING_BASELINE_MSE:.4f}"
    )
    start = time.perf_counter()
    for iteration in range(1, args.iterations + 1):
        batch = adding_problem(args.batch, args.steps, seed=args.seed + 1000 + iteration)
        loss = nn.functional.mse_loss(model(batch.inputs), batch.targets)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        if iteration % 50 == 0 or iteration == 1:
            with torch.no_grad():
                val = nn.functional.mse_loss(model(validation.inputs), validation.targets)
            print(
                f"step {iteration:4d}  train MSE {loss.item():.4f}  validation MSE {val.item():.4f}"
            )
    print(
        f"done in {time.perf_counter() - start:.0f} s; validation MSE {val.item():.4f} "
        f"against the baseline {ADDING_BASELINE_MSE:.4f}"
    )


if __name__ == "__main__":
    main()
