"""Where the compiled Numba kernels beat torch's own, as measured by `rnnkit bench`.

torch runs GRU and Elman layers on the CPU one step at a time, a few operator calls per step
(forward) and more in the backward pass, each with microseconds of overhead, around a matrix
product that is efficient once batch * hidden is large. The Numba kernels pay no per-step
overhead but multiply with hand-written loops, so they win at small batches, by 5-10x at
batch 1, and the gap closes as the batch grows. The backward pass costs torch more per step
than the forward, so the kernels keep winning to larger batches when training.

Thresholds from a grid on this machine (torch 2.13, one thread, hidden 8-1024, batch 1-128,
T 1-1000; see docs/kernels.md). Below about 8 steps the kernels' fixed cost per call (argument
checks, buffers, the autograd node) outweighs the saving. The LSTM always goes to torch: its
oneDNN kernel is fused already.
"""

from __future__ import annotations

KINDS = ("gru", "rnn_tanh", "rnn_relu")  # the kinds with a Numba kernel
MIN_STEPS = 8
MAX_HIDDEN = 1024  # the largest size measured
MAX_BATCH_TRAINING = 16  # when autograd will run the backward pass
MAX_BATCH_INFERENCE = 8


def numba_is_faster(
    kind: str, batch: int, hidden: int, seq_len: int, training: bool = True
) -> bool:
    """Whether the Numba kernel beats torch's for one layer direction of this size on the CPU.

    kind: "lstm", "gru", "rnn_tanh" or "rnn_relu"; `training`: a backward pass will follow
    (grad enabled and some input or parameter requires grad). The caller checks the rest of
    what the kernels need: CPU tensors of float32 or float64, and no cell variant.
    """
    if kind not in KINDS or seq_len < MIN_STEPS or hidden > MAX_HIDDEN:
        return False
    return batch <= (MAX_BATCH_TRAINING if training else MAX_BATCH_INFERENCE)
