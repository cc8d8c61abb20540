"""Training: fit(), evaluate(), truncated BPTT, checkpoints, metrics, distributed, diagnostics.

    from rnnkit.train import TrainConfig, fit, evaluate
    history = fit(model, train_batch, val_batch, TrainConfig(epochs=20, run_dir="runs/adding"))

`train` knows task models only through `model.loss(batch)` and `model.predict(batch)` (and, for
truncated BPTT on a `Stream`, `loss(batch, state) -> (loss, state)`; see `rnnkit.train.tbptt`).
It imports nothing from `rnnkit.models`, `rnnkit.tasks` or the command line. Files: config
(TrainConfig), checks (errors before training), loop (fit), evaluate, tbptt (Stream, truncated
BPTT), batches (data order), optim, metrics, checkpoint (run directory), seeding, distributed,
report (end-of-run files), diagnostics (gradient flow). User guide: docs/training.md.
"""

from rnnkit.train.checkpoint import load_checkpoint, read_csv
from rnnkit.train.config import TrainConfig
from rnnkit.train.diagnostics import hidden_gradient_norms
from rnnkit.train.evaluate import evaluate
from rnnkit.train.loop import NonFiniteLossError, fit
from rnnkit.train.metrics import METRIC_NAMES
from rnnkit.train.seeding import seed_everything
from rnnkit.train.tbptt import Stream

__all__ = [
    "METRIC_NAMES",
    "NonFiniteLossError",
    "Stream",
    "TrainConfig",
    "evaluate",
    "fit",
    "hidden_gradient_norms",
    "load_checkpoint",
    "read_csv",
    "seed_everything",
]
