"""rnnkit on a CUDA device.

The drop-in layers against torch.nn on the same device; every variant layer and minGRU/minLSTM
on the device against the same weights on the CPU in float64 (outputs, final states, gradients
of the input and of every parameter), with lengths, two directions and stacked layers;
streaming `step()`; training-mode masks drawn on the device; and each task trained end to end
with `--device cuda`, its run then evaluated on the CPU to the same metrics.

These run where CUDA is: `python -m pytest -m cuda` on a GPU machine. Without a device they are
skipped (the CPU routes are covered by the rest of the suite).
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks import load_run
from variant_layers import VARIANT_LAYERS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

F64 = torch.float64
CUDA = torch.device("cuda")

PLAIN = {
    "rnn_tanh": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, rnnkit.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, rnnkit.LSTM, {"proj_size": 3}),
    "gru": (torch.nn.GRU, rnnkit.GRU, {}),
}

VARIANTS = {
    **VARIANT_LAYERS,
    "mingru": lambda i, h, **kw: rnnkit.MinGRU(i, h, **kw),
    "minlstm": lambda i, h, **kw: rnnkit.MinLSTM(i, h, **kw),
}


def _tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def _run(layer, x, lengths=None):
    """Output, final state, and the gradients of x and of every parameter of sum(out) + sum(h)."""
    x = x.detach().requires_grad_(True)
    out, final = layer(x, lengths=lengths)
    loss = out.sum() + sum((s * s).sum() for s in _tensors(final))
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return out, final, grads


def _assert_same(cuda_result, cpu_result, **tolerance):
    for got, want in zip(cuda_result[:2], cpu_result[:2], strict=True):
        torch.testing.assert_close(got, want, check_device=False, **tolerance)
    for got, want in zip(cuda_result[2], cpu_result[2], strict=True):
        torch.testing.assert_close(got, want, check_device=False, **tolerance)


@pytest.mark.parametrize("kind", list(PLAIN))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_drop_in_layers_equal_torch_nn_on_the_device(kind, with_lengths):
    """rnnkit.RNN/LSTM/GRU on CUDA (torch's fused kernel there) equal torch.nn's on CUDA:
    outputs, final states and every gradient; lengths= against torch.nn on a PackedSequence."""
    torch_cls, ours_cls, extra = PLAIN[kind]
    torch.manual_seed(0)
    kwargs = dict(num_layers=2, bidirectional=True, dtype=F64, device=CUDA, **extra)
    reference = torch_cls(5, 6, **kwargs)
    ours = ours_cls(5, 6, **kwargs)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(7, 4, 5, dtype=F64, device=CUDA)
    lengths = torch.tensor([7, 3, 5, 1]) if with_lengths else None
    got = _run(ours, x, lengths)

    x_ref = x.detach().requires_grad_(True)
    if lengths is None:
        out, final = reference(x_ref)
    else:
        packed, final = reference(pack_padded_sequence(x_ref, lengths, enforce_sorted=False))
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed, total_length=7)
    loss = out.sum() + sum((s * s).sum() for s in _tensors(final))
    want = (out, final, torch.autograd.grad(loss, [x_ref, *reference.parameters()]))
    _assert_same(got, want)
    assert got[0].device.type == CUDA.type


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_variant_layers_on_the_device_equal_the_cpu(name, bidirectional):
    """Each variant (eval mode: zoneout and dropouts at their expectations) and minGRU/minLSTM
    (the log-space scan on CUDA, the compiled scan on the CPU) give on CUDA what the same
    weights give on the CPU, in float64, with lengths and two stacked layers."""
    torch.manual_seed(1)
    cpu_layer = VARIANTS[name](5, 6, num_layers=2, bidirectional=bidirectional, dtype=F64).eval()
    cuda_layer = VARIANTS[name](5, 6, num_layers=2, bidirectional=bidirectional, dtype=F64).eval()
    cuda_layer.load_state_dict(cpu_layer.state_dict())
    cuda_layer.to(CUDA)
    x = torch.randn(9, 3, 5, dtype=F64)
    lengths = torch.tensor([9, 4, 1])
    _assert_same(_run(cuda_layer, x.to(CUDA), lengths), _run(cpu_layer, x, lengths))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_training_runs_on_the_device(name):
    """In training, the masks (recurrent dropout, zoneout, weight drop) are drawn on the device:
    the output stays there, gradients reach every parameter, and masks do act (train != eval,
    except minGRU/minLSTM, which have none)."""
    torch.manual_seed(2)
    layer = VARIANTS[name](5, 6, num_layers=2, dropout=0.2, device=CUDA)
    x = torch.randn(8, 4, 5, device=CUDA)
    out, final = layer(x)
    (out.sum() + sum(s.sum() for s in _tensors(final))).backward()
    assert out.device.type == CUDA.type and torch.isfinite(out).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.device.type == CUDA.type, pname
        assert torch.isfinite(p.grad).all(), pname
    with torch.no_grad():
        evaluated, _ = layer.eval()(x)
    if not name.startswith("min"):
        assert not torch.allclose(out, evaluated)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", *VARIANTS])
def test_step_on_the_device_reproduces_forward(name):
    """Streaming `step()` on CUDA, fed back its own state, gives forward's outputs."""
    torch.manual_seed(3)
    if name in PLAIN:  # float64: cuDNN's sequence and the cell kernel sum in other orders
        _, ours_cls, extra = PLAIN[name]
        layer = ours_cls(5, 6, num_layers=2, device=CUDA, dtype=F64, **extra).eval()
    else:
        layer = VARIANTS[name](5, 6, num_layers=2, dtype=F64).to(CUDA).eval()
    x = torch.randn(6, 2, 5, device=CUDA, dtype=F64)
    with torch.no_grad():
        expected, expected_final = layer(x)
        state, outputs = None, []
        for t in range(6):
            out, state = layer.step(x[t], state)
            outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), expected)
    torch.testing.assert_close(state, expected_final)
    assert outputs[0].device.type == CUDA.type


@pytest.mark.parametrize("kind", list(PLAIN))
def test_eval_mode_layers_give_gradients_on_the_device(kind):
    """In eval, cuDNN refuses a backward (torch.nn raises "cudnn RNN backward can only be called
    in training mode"); rnnkit's layers run it in training mode without dropout, the same
    function: gradients equal the CPU's, in float64, with lengths and inter-layer dropout set."""
    _, ours_cls, extra = PLAIN[kind]
    torch.manual_seed(4)
    kwargs = dict(num_layers=2, bidirectional=True, dropout=0.5, dtype=F64, **extra)
    cpu_layer = ours_cls(5, 6, **kwargs).eval()
    cuda_layer = ours_cls(5, 6, device=CUDA, **kwargs).eval()
    cuda_layer.load_state_dict(cpu_layer.state_dict())
    x, lengths = torch.randn(7, 3, 5, dtype=F64), torch.tensor([7, 2, 5])
    _assert_same(_run(cuda_layer, x.to(CUDA), lengths), _run(cpu_layer, x, lengths))


FLATTENED = {  # ours, torch.nn's, the shared arguments, ours' own options
    "lstm_bidirectional": (
        rnnkit.LSTM,
        torch.nn.LSTM,
        {"num_layers": 2, "bidirectional": True},
        {},
    ),
    "lstm_proj": (rnnkit.LSTM, torch.nn.LSTM, {"num_layers": 2, "proj_size": 3}, {}),
    "lstm_recurrent_dropout": (rnnkit.LSTM, torch.nn.LSTM, {}, {"recurrent_dropout": 0.3}),
    "gru_no_bias": (rnnkit.GRU, torch.nn.GRU, {"num_layers": 3, "bias": False}, {}),
    "rnn_relu": (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"}, {}),
}


@pytest.mark.parametrize("name", list(FLATTENED))
def test_weights_are_flattened_for_cudnn(name):
    """After construction on the device and after a move there, the gate weights are views of
    one buffer (as torch.nn's flatten_parameters leaves them): cuDNN neither copies them on each
    call nor warns, and the layer equals torch.nn with the same weights. A recurrent-dropout
    LSTM, torch.nn's LSTM in eval, is flattened too."""
    ours_cls, torch_cls, kwargs, options = FLATTENED[name]
    torch.manual_seed(5)
    moved = ours_cls(5, 6, **kwargs, **options).cuda().cpu().cuda()
    for layer in (ours_cls(5, 6, device=CUDA, **kwargs, **options), moved):
        layer.eval()
        weights = layer._flat_weights
        assert len({w.untyped_storage().data_ptr() for w in weights}) == 1
        assert all(isinstance(w, torch.nn.Parameter) for w in weights)
        reference = torch_cls(5, 6, device=CUDA, **kwargs).eval()
        reference.load_state_dict(layer.state_dict())
        x = torch.randn(4, 2, 5, device=CUDA, requires_grad=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*not part of single contiguous chunk")
            out, _ = layer(x)
            out.sum().backward()
        torch.testing.assert_close(out, reference(x)[0])


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", *VARIANTS])
def test_layers_under_bfloat16_autocast_on_the_device(name):
    """Inside torch.autocast("cuda", bfloat16), as torch.nn's layers run there: forward, a
    bfloat16 state fed back to forward and to step(), gradients for every parameter, and
    outputs within bfloat16's precision of float32's. (torch's autocast runs cuDNN's RNNs in
    float16 whatever dtype it was given; the drop-in layers keep that rule.)"""
    torch.manual_seed(6)
    if name in PLAIN:
        _, ours_cls, extra = PLAIN[name]
        layer = ours_cls(5, 32, num_layers=2, device=CUDA, **extra).eval()
    else:
        layer = VARIANTS[name](5, 32, num_layers=2).to(CUDA).eval()
    x = torch.randn(6, 3, 5, device=CUDA)
    with torch.no_grad():
        expected, expected_state = layer(x)
        expected_again, _ = layer(x, expected_state)
        expected_step, _ = layer.step(x[0], expected_state)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, state = layer(x)
        again, _ = layer(x, state)
        stepped, _ = layer.step(x[0], state)
    (again.float().sum() + stepped.float().sum()).backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for got, want in ((out, expected), (again, expected_again), (stepped, expected_step)):
        # bfloat16 keeps 8 bits, and layer norm divides by the spread of a gate's units, so
        # there an element can move by 0.24 (H = 32; over 1 at H = 6). Worst over 20 seeds on
        # an H200: mean 0.016, max 0.24 with layer norm; mean 0.002, max 0.01 without. A state
        # lost on the way back in moves the mean by 0.27 or more with layer norm, 0.007 or
        # more without.
        mean_bound, max_bound = (0.05, 0.5) if "layer_norm" in name else (3e-3, 0.05)
        difference = (got.float() - want).abs()
        assert difference.mean() < mean_bound and difference.max() < max_bound, difference.max()


def test_numba_backend_on_the_device_is_a_clear_error():
    layer = rnnkit.GRU(5, 6, backend="numba", device=CUDA)
    with pytest.raises(ValueError, match="backend='numba' runs float32/float64 on the CPU"):
        layer(torch.randn(3, 2, 5, device=CUDA))


def test_input_on_another_device_than_the_layer_is_a_clear_error():
    layer = rnnkit.LSTM(5, 6, layer_norm=True)  # on the CPU
    with pytest.raises(ValueError, match="input is on cuda"):
        layer(torch.randn(3, 2, 5, device=CUDA))


TASKS = {
    "classify": ["--train-size", "200", "--hidden-size", "12", "--embedding-dim", "12"],
    "lm": ["--limit", "8000", "--batch-size", "8", "--bptt-k1", "25", "--hidden-size", "32"],
    "tag": ["--limit", "120", "--hidden-size", "16", "--embedding-dim", "16"],
    "forecast": ["--hidden-size", "16"],
    "translate": ["reverse", "--hidden-size", "16", "--embedding-dim", "16"],
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_task_trains_on_the_device_and_evaluates_on_the_cpu(task, tmp_path, monkeypatch):
    """`rnnkit train TASK --device cuda` finishes; its run, loaded on the CPU, evaluates to the
    test metrics it recorded on the device (float32 on two devices: to 1e-3)."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = ["train", task, *TASKS[task], "--epochs", "2", "--seed", "0", "--no-progress"]
    assert main([*argv, "--device", "cuda", "--run-dir", str(run_dir)]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    run = load_run(run_dir)
    assert next(run.model.parameters()).device.type == "cpu"
    evaluated = run.task.evaluate(run, None)
    assert set(evaluated) == set(recorded)
    for key, value in recorded.items():
        if isinstance(value, float) and math.isfinite(value):
            assert evaluated[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classify", "lm", "tag", "translate"])
def test_task_trains_in_bfloat16_on_the_device(task, tmp_path, monkeypatch):
    """`--precision bf16`: the training steps under bfloat16 autocast on the device finish and
    evaluate (in float32) to finite metrics."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = ["train", task, *TASKS[task], "--epochs", "2", "--seed", "0", "--no-progress"]
    assert main([*argv, "--device", "cuda", "--precision", "bf16", "--run-dir", str(run_dir)]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert recorded and all(math.isfinite(v) for v in recorded.values() if isinstance(v, float))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"
