"""Where the compiled Numba kernels beat torch's own, as measured by `rnnkit bench`.

torch runs GRU and Elman layers on the CPU one step at a time, a few operator calls per step
(forward) and more in the backward pass, each with microseconds of overhead, around a matrix
product that is efficient once batch * hidden is large. The Numba kernels pay no per-step
overhead (their per-step products are OpenBLAS calls, or register-blocked tiles on a weight
packed once per call for large ones and from batch 16), so they win at small batches, by
5-10x at batch 1, and by 11-68% still at batch 16-128 for the GRU and tanh Elman, and for the
relu Elman above H = 64 (at H = 64 its inference is even there, so it keeps the limits measured
before the tiles).
The backward pass costs torch more per step than the forward, so the kernels keep winning to
larger batches when training.

Thresholds from grids on this machine (torch 2.13, one thread, hidden 8-1024, batch 1-128,
T 1-1000, and T 4-32 at hidden 16-1024, batch 1-128; see docs/kernels.md). On short sequences the
kernels' fixed cost per call (about 0.1 ms: argument checks, buffers, the autograd node)
outweighs the saving; torch's own cost per step is largest for the GRU in training, so that one
wins from 4 steps, Elman inference, torch's cheapest, only from 32; larger hidden sizes need a
few more steps. The LSTM always goes to torch: its oneDNN kernel is fused already.
"""

from __future__ import annotations

from rnnkit.variants import VariantElmanCell, VariantGRUCell, VariantLSTMCell

KINDS = ("gru", "rnn_tanh", "rnn_relu")  # the kinds with a Numba kernel
SMALL_HIDDEN = 64  # MIN_STEPS has one threshold up to this hidden size and one above it
MIN_STEPS = {  # (kind, training): the shortest T where the kernel wins, (H <= 64, H > 64)
    ("gru", True): (4, 4),  # ratio 0.60-0.95 at T = 4, batch <= 8 (see SHORT_GRU_TRAINING)
    ("gru", False): (8, 16),  # H = 256: 1.04-1.31 at T = 8-12, <= 0.99 from 16
    ("rnn_tanh", True): (8, 12),  # T = 8: <= 0.97 to H = 64, up to 1.20 at H = 256 (relu)
    ("rnn_relu", True): (8, 12),
    ("rnn_tanh", False): (32, 32),  # 0.91-1.15 at T = 16, 0.75-1.14 at 24, 0.63-0.92 at 32
    ("rnn_relu", False): (32, 32),
}
# The GRU's training wins from 4 steps only where torch's per-step cost dominates: at batch 1
# (0.72-0.90 at T = 4, H 64-1024) and at batch <= 8 with H <= 128 (0.66-0.80). At batch 16-128,
# or H 256-1024 from batch 4, T = 4 read 0.94-1.16 and T = 6 0.73-1.12; from T = 8, 0.68-0.99.
SHORT_GRU_TRAINING = (8, 128)  # (batch, hidden) up to which MIN_STEPS' 4 steps hold
GRU_TRAINING_MIN_STEPS = 8  # above them
MAX_HIDDEN = 1024  # the largest size measured
MAX_BATCH_TRAINING = 16  # when autograd will run the backward pass
MAX_BATCH_INFERENCE = 8
WIDE_KINDS = ("gru", "rnn_tanh")  # with the packed products they win at larger batches too:
WIDE_MAX_BATCH = 128  # 0.32-0.89 at batch 16-128, T = 50, H 64-1024 (docs/kernels.md)
# The relu Elman above H = 64: 0.82-0.96 in training to batch 128 (T 12-50), 0.77-0.93 in
# inference to batch 64 (T = 32), 0.89-1.01 at 128; at H = 64 it loses from batch 32-64.
RELU_WIDE_MAX_BATCH_INFERENCE = 64
VARIANT_MIN_STEPS = 4  # the variant cells' kernel against the reference loop over them
VARIANT_MAX_BATCH = 64  # LSTM and GRU, and Elman in inference
VARIANT_MAX_BATCH_ELMAN_TRAINING = 128  # the largest batch measured


def numba_is_faster(
    kind: str, batch: int, hidden: int, seq_len: int, training: bool = True
) -> bool:
    """Whether the Numba kernel beats torch's for one layer direction of this size on the CPU.

    kind: "lstm", "gru", "rnn_tanh" or "rnn_relu"; `training`: a backward pass will follow
    (grad enabled and some input or parameter requires grad). The caller checks the rest of
    what the kernels need: CPU tensors of float32 or float64, and no cell variant.
    True from `MIN_STEPS[kind, training]` steps (4-32, by hidden size; the GRU's training from
    8 steps above batch 8 or hidden 128 unless at batch 1), hidden <= 1024, and batch <= 128
    for the GRU and tanh Elman; for the relu Elman batch <= 128 in training and 64 in
    inference above hidden 64, 16 and 8 up to it.
    """
    if kind not in KINDS or hidden > MAX_HIDDEN:
        return False
    min_steps = MIN_STEPS[kind, training][hidden > SMALL_HIDDEN]
    short_batch, short_hidden = SHORT_GRU_TRAINING
    if kind == "gru" and training and batch > 1 and (batch > short_batch or hidden > short_hidden):
        min_steps = max(min_steps, GRU_TRAINING_MIN_STEPS)
    if seq_len < min_steps:
        return False
    if kind in WIDE_KINDS:
        return batch <= WIDE_MAX_BATCH
    if hidden > SMALL_HIDDEN:  # the relu Elman
        return batch <= (WIDE_MAX_BATCH if training else RELU_WIDE_MAX_BATCH_INFERENCE)
    return batch <= (MAX_BATCH_TRAINING if training else MAX_BATCH_INFERENCE)


def variant_kind(cell: object) -> str | None:
    """The kind ("lstm", "gru", "rnn_tanh", "rnn_relu") of a cell that `kernels.variant_sequence`
    runs (a variant cell, not a subclass, which may change the step), else None."""
    if type(cell) is VariantLSTMCell:
        return "lstm"
    if type(cell) is VariantGRUCell:
        return "gru"
    if type(cell) is VariantElmanCell and cell.nonlinearity in ("tanh", "relu"):
        return f"rnn_{cell.nonlinearity}"
    return None


def variant_numba_is_faster(
    kind: str, batch: int, hidden: int, seq_len: int, training: bool = True
) -> bool:
    """Whether the compiled variant kernel beats the reference loop over a variant cell for one
    layer direction of this size on the CPU (kind as `variant_kind`).

    From a grid (one thread, T 3 and 50, H 64-512, batch 1-128; docs/kernels.md): the loop pays
    a dozen operator calls per step, so the kernel wins 5-15x at batch 1; with its per-step
    products through BLAS it still wins at batch 64 (0.74-0.98 of the loop's time, H 256-512)
    and loses from about batch 128 (LSTM, GRU: 0.86-1.16; Elman in inference 0.94-1.01), where
    the loop's per-step products are as efficient; Elman training still wins at 128. At T = 3
    the two are even for Elman, the kernel ahead by 10-50% for LSTM and GRU at batch <= 16.
    """
    if seq_len < VARIANT_MIN_STEPS or hidden > MAX_HIDDEN:
        return False
    elman_training = training and kind in ("rnn_tanh", "rnn_relu")
    return batch <= (VARIANT_MAX_BATCH_ELMAN_TRAINING if elman_training else VARIANT_MAX_BATCH)
