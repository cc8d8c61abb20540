"""The streaming steps' partner thread (`kernels._step_partner`): with it the steps give the
same bits as without it, whatever the partner is doing (working, parked, taken by another
caller, gone after a fork), and it really takes part."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numba
import numpy
import pytest
import torch

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import _numba_atomics as atomics
from rnnkit.kernels import _step_partner as partner_module
from rnnkit.kernels import numba_step

# sizes over PAIR_MIN_BYTES, with 4H and 3H rows that leave a remainder after blocks of eight
HIDDEN, INPUT = 131, 300


@pytest.fixture
def two_threads():
    """torch allowed two threads (other test modules set one at import), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    partner_module.partner_control(partner_module.PAIR_MIN_BYTES)  # started, if not yet
    assert partner_module._partner.serving.wait(timeout=120)
    yield
    torch.set_num_threads(before)


def cell_and_step(kind: str, dtype: torch.dtype = torch.float32):
    cell_class, step_class = {
        "lstm": (torch.nn.LSTMCell, kernels.LSTMStep),
        "gru": (torch.nn.GRUCell, kernels.GRUStep),
    }[kind]
    cell = cell_class(INPUT, HIDDEN, dtype=dtype)
    return cell, step_class(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


def run_steps(step, xs, state):
    """The states of a stream of steps, each fed the state the step before returned."""
    states = []
    with torch.no_grad():
        for x in xs:
            state = step(x, state)
            states.append(state)
    return states


def initial_state(kind: str, batch: int, dtype: torch.dtype):
    h = torch.randn(batch, HIDDEN, dtype=dtype)
    return (h, torch.randn(batch, HIDDEN, dtype=dtype)) if kind == "lstm" else h


def flat(states) -> list[torch.Tensor]:
    return [t for s in states for t in (s if isinstance(s, tuple) else (s,))]


def partner_has_computed(timeout: float = 5.0) -> bool:
    """Whether a chunk of the last job is DONE: only the partner marks chunks so (the caller
    marks those it takes STOLEN). Steps are run until one is, for at most `timeout`."""
    control = partner_module._partner.control
    n_partner = int(control[partner_module.N_PARTNER])
    states = control[partner_module.CHUNKS : partner_module.CHUNKS + 8 * n_partner : 8]
    return bool(((states & 3) == partner_module.DONE).any())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_steps_with_the_partner_equal_steps_alone_bit_for_bit(kind, dtype, batch, two_threads):
    torch.manual_seed(batch)
    cell, step = cell_and_step(kind, dtype)
    assert partner_module.partner_control(step.weight_bytes) is not partner_module.NO_PARTNER
    xs = [torch.randn(batch, INPUT, dtype=dtype) for _ in range(6)]  # both read directions
    state = initial_state(kind, batch, dtype)
    paired = run_steps(step, xs, state)
    torch.set_num_threads(1)
    alone = run_steps(step, xs, state)
    for ours, single in zip(flat(paired), flat(alone), strict=True):
        torch.testing.assert_close(ours, single, rtol=0, atol=0)
    torch.testing.assert_close(paired, run_steps(cell, xs, state))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch", [1, 3])
def test_updates_in_place_with_the_partner_equal_steps_alone(kind, batch, two_threads):
    """`update_` (the state as both input and output of the kernel, the partner reading its
    copies of x and h) gives the bits of `step()` on one thread."""
    torch.manual_seed(10 + batch)
    _, step = cell_and_step(kind)
    xs = [torch.randn(batch, INPUT) for _ in range(6)]
    state = initial_state(kind, batch, torch.float32)
    in_place = tuple(p.clone() for p in flat([state]))
    in_place = in_place if kind == "lstm" else in_place[0]
    updated = []
    with torch.no_grad():
        for x in xs:
            step.update_(x, in_place)
            updated.append(tuple(p.clone() for p in flat([in_place])))
    torch.set_num_threads(1)
    alone = run_steps(step, xs, state)
    for ours, single in zip(updated, alone, strict=True):
        torch.testing.assert_close(ours, tuple(flat([single])), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_partner_takes_part(kind, two_threads):
    """Over a stream of steps the partner computes chunks (it starts, calibrates its clock and
    loads its loop in the background; the steps meanwhile run alone)."""
    torch.manual_seed(0)
    _, step = cell_and_step(kind)
    x, state = torch.randn(1, INPUT), initial_state(kind, 1, torch.float32)
    deadline, computed = time.monotonic() + 10, False
    control = partner_module._partner.control
    with torch.no_grad():
        while not computed and time.monotonic() < deadline:
            control[partner_module.BACKOFF] = 0  # (a loaded machine may have made the steps
            control[partner_module.DOUBLINGS] = 0  # back off: this asks if it takes part)
            for _ in range(50):
                state = step(x, state)
            computed = partner_has_computed()
    assert computed


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(INPUT, HIDDEN, num_layers=2),
        lambda: rnnkit.GRU(INPUT, HIDDEN, num_layers=2),
        lambda: rnnkit.LSTM(INPUT, HIDDEN, num_layers=2, layer_norm=True, peephole=True),
        lambda: rnnkit.GRU(INPUT, HIDDEN, layer_norm=True, proj_size=64),
        lambda: rnnkit.RNN(INPUT, 4 * HIDDEN, nonlinearity="relu", proj_size=64, zoneout=0.1),
    ],
)
def test_layer_steps_with_the_partner_equal_steps_alone(make, two_threads):
    torch.manual_seed(1)
    layer = make().eval()
    xs = [torch.randn(1, INPUT) for _ in range(4)]

    def stream():
        outputs, state = [], None
        with torch.no_grad():
            for x in xs:
                out, state = layer.step(x, state)
                outputs.append(out)
        return outputs

    def stream_in_place():  # `step_`: the state is each layer kernel's input and output
        with torch.no_grad():
            out, state = layer.step(xs[0])
            outputs = [out]
            for x in xs[1:]:
                outputs.append(layer.step_(x, state).clone())
        return outputs

    paired, paired_in_place = stream(), stream_in_place()
    torch.set_num_threads(1)
    alone = stream()
    torch.testing.assert_close(paired, alone, rtol=0, atol=0)
    torch.testing.assert_close(paired_in_place, alone, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(paired[-1], layer(torch.stack(xs))[0][-1])


@pytest.fixture
def own_partner(monkeypatch):
    """A partner of its own for the test, which parks after 2 ms without a job."""
    monkeypatch.setattr(partner_module, "PARK_SECONDS", 0.002)
    partner = partner_module.Partner()
    assert partner.serving.wait(timeout=120)
    monkeypatch.setattr(partner_module, "_partner", partner)
    yield partner
    partner.stop()
    assert not partner._thread.is_alive()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)
    return condition()


def test_a_parked_partner_is_woken_by_the_next_step(own_partner, two_threads):
    torch.manual_seed(2)
    cell, step = cell_and_step("lstm")
    x, state = torch.randn(1, INPUT), initial_state("lstm", 1, torch.float32)
    status = own_partner.control[partner_module.STATUS : partner_module.STATUS + 1]
    assert wait_for(lambda: status[0] == partner_module.PARKED)
    with torch.no_grad():
        torch.testing.assert_close(step(x, state), cell(x, state))  # run alone, then woken
    assert wait_for(lambda: own_partner.wakes == 1)
    assert wait_for(lambda: status[0] == partner_module.PARKED)  # and parks again


def test_a_partner_taken_by_another_caller_leaves_the_step_alone(own_partner, two_threads):
    torch.manual_seed(3)
    cell, step = cell_and_step("gru")
    x, h = torch.randn(2, INPUT), torch.randn(2, HIDDEN)
    control = own_partner.control
    control[partner_module.OWNER] = 1  # another thread's step holds the partner
    ticket = int(control[partner_module.TICKET])
    with torch.no_grad():
        torch.testing.assert_close(step(x, h), cell(x, h))
    assert control[partner_module.TICKET] == ticket  # no job was published
    control[partner_module.OWNER] = 0
    with torch.no_grad():
        torch.testing.assert_close(step(x, h), cell(x, h))
    assert control[partner_module.TICKET] == ticket + 1


def test_threads_stepping_at_once_each_get_their_own_results(two_threads):
    """Two threads stream through different cells at once (the kernels release the GIL): one
    has the partner at a time, the other runs alone, and both get the bits of a lone run."""
    torch.manual_seed(4)
    streams = []
    for kind in ("lstm", "gru"):
        _, step = cell_and_step(kind)
        xs = [torch.randn(1, INPUT) for _ in range(300)]
        streams.append((step, xs, initial_state(kind, 1, torch.float32)))
    results: dict[int, list] = {}

    def stream(index: int) -> None:
        results[index] = run_steps(*streams[index])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.set_num_threads(1)
    for index, (step, xs, state) in enumerate(streams):
        alone = run_steps(step, xs, state)
        for ours, single in zip(flat(results[index]), flat(alone), strict=True):
            torch.testing.assert_close(ours, single, rtol=0, atol=0)


def _child_steps(queue) -> None:
    torch.manual_seed(5)
    _, step = cell_and_step("lstm")
    xs = [torch.randn(1, INPUT) for _ in range(20)]
    states = flat(run_steps(step, xs, initial_state("lstm", 1, torch.float32)))
    queue.put([s.numpy().copy() for s in states])  # arrays: tensors would go by shared memory
    queue.put(partner_module._partner is not None and partner_module._partner._thread.is_alive())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_a_forked_child_starts_its_own_partner(two_threads):
    torch.manual_seed(6)
    _, step = cell_and_step("lstm")
    run_steps(step, [torch.randn(1, INPUT)] * 4, initial_state("lstm", 1, torch.float32))
    assert partner_module._partner is not None  # the parent's partner runs
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_steps, args=(queue,))
    child.start()
    child_states, child_partner_alive = queue.get(timeout=120), queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert child_partner_alive
    torch.set_num_threads(1)
    torch.manual_seed(5)
    _, step = cell_and_step("lstm")
    xs = [torch.randn(1, INPUT) for _ in range(20)]
    alone = flat(run_steps(step, xs, initial_state("lstm", 1, torch.float32)))
    child_states = [torch.from_numpy(s) for s in child_states]
    torch.testing.assert_close(child_states, alone, rtol=0, atol=0)


def test_no_partner_on_one_thread_for_small_weights_or_elsewhere(two_threads, monkeypatch):
    assert partner_module.partner_control(partner_module.PAIR_MIN_BYTES - 1).size == 0
    assert partner_module.partner_control(partner_module.PAIR_MIN_BYTES).size > 0
    monkeypatch.setattr(partner_module, "SUPPORTED", False)  # not x86-64 POSIX
    assert partner_module.partner_control(partner_module.PAIR_MIN_BYTES).size == 0
    monkeypatch.setattr(partner_module, "SUPPORTED", True)
    torch.set_num_threads(1)
    assert partner_module.partner_control(10 * partner_module.PAIR_MIN_BYTES).size == 0


def test_steps_run_alone_while_backing_off(own_partner, two_threads):
    torch.manual_seed(7)
    cell, step = cell_and_step("lstm")
    x, state = torch.randn(1, INPUT), initial_state("lstm", 1, torch.float32)
    control = own_partner.control
    control[partner_module.BACKOFF] = 2
    ticket = int(control[partner_module.TICKET])
    with torch.no_grad():
        for published in (0, 0, 1):
            torch.testing.assert_close(step(x, state), cell(x, state))
            assert control[partner_module.TICKET] == ticket + published
    assert control[partner_module.BACKOFF] == 0


@numba.njit(nogil=True)
def slow_partner(control, like, ticket, nap_us):
    """A partner that claims all its chunks of the job after `ticket` at once, naps `nap_us`,
    then computes them and acknowledges the job: as a partner whose core was taken in the
    middle of its work. Returns how many it claimed (-1: no job came within some seconds)."""
    spins = 0
    while atomics.load_acquire(control, partner_module.TICKET) == ticket:
        atomics.spin_pause()
        spins += 1
        if spins > 100_000_000:
            return -1
    ticket += 1
    free, claimed = 4 * ticket + partner_module.FREE, 4 * ticket + partner_module.CLAIMED
    n_partner, claims = control[partner_module.N_PARTNER], 0
    for chunk in range(n_partner):
        slot = partner_module.CHUNKS + 8 * chunk
        if atomics.compare_swap(control, slot, free, claimed) == free:
            claims += 1
    atomics.nap(nap_us)
    for chunk in range(n_partner):
        slot = partner_module.CHUNKS + 8 * chunk
        if control[slot] == claimed:
            partner_module._add_chunk(control, chunk, like, partner_module.RESULT)
            atomics.compare_swap(control, slot, claimed, 4 * ticket + partner_module.DONE)
    atomics.store_release(control, partner_module.ACK, ticket)
    return claims


def test_a_step_takes_over_the_chunks_of_a_stalled_partner(two_threads):
    """A step waits for the chunks the partner claimed only about as long as it worked itself,
    then computes them itself (the result exact), runs the next BACKOFF_STEPS steps alone
    (twice as many if it happens again next time), and gives the partner no new job before it
    has let go of that one (ACK). A partner that spins yet takes no part backs the steps off
    too."""
    torch.manual_seed(8)
    cell, step = cell_and_step("gru")
    control = numpy.zeros(partner_module.CONTROL_SIZE, numpy.int64)  # no partner thread
    buffer = numpy.zeros(partner_module.BUFFER_BYTES_DEFAULT // 8)
    control[partner_module.BUFFER] = buffer.ctypes.data
    control[partner_module.BUFFER_BYTES] = buffer.nbytes
    control[partner_module.STATUS] = partner_module.NAPPING  # (a spinning one would take part)
    like = numpy.zeros(0, numpy.float32)
    x, h = torch.randn(1, INPUT), torch.randn(1, HIDDEN)
    with torch.no_grad():
        expected = cell(x, h)

    def kernel_step():  # flags, the new h
        h_new = numpy.empty((1, HIDDEN), numpy.float32)
        flags = numba_step.gru_step_at(x.data_ptr(), h.numpy(), *step.views, h_new, False, control)
        torch.testing.assert_close(torch.from_numpy(h_new), expected)
        return flags

    claims: list[int] = []
    slow_partner(control, like, -1, 0)  # compiled (the ticket is not -1: no wait, no claim)
    control[partner_module.ACK] = 0  # (which it acknowledged)

    def stand_in(ticket: int) -> None:
        claims.append(slow_partner(control, like, ticket, 300_000))

    for _ in range(20):  # until the stand-in claims before the step takes its chunks
        ticket = int(control[partner_module.TICKET])
        partner = threading.Thread(target=stand_in, args=(ticket,))
        partner.start()
        time.sleep(0.01)  # spinning on the ticket
        flags = kernel_step()
        if flags == partner_module.STALE_FLAG:
            break
        partner.join(timeout=60)
    assert flags == partner_module.STALE_FLAG
    assert control[partner_module.BACKOFF] == partner_module.BACKOFF_STEPS
    assert control[partner_module.DOUBLINGS] == 1  # the next time: twice as long
    control[partner_module.BACKOFF] = 0
    assert kernel_step() == 0
    assert control[partner_module.TICKET] == ticket + 1  # alone: the stand-in still naps in
    # the job it has not acknowledged
    partner.join(timeout=60)
    assert not partner.is_alive() and claims[-1] > 0
    assert kernel_step() == 0  # acknowledged: a new job is published (nobody takes part)
    assert control[partner_module.TICKET] == ticket + 2
    assert control[partner_module.BACKOFF] == 0
    assert control[partner_module.DOUBLINGS] == 1  # (a napping partner tells nothing)
    control[partner_module.ACK] = ticket + 2  # acknowledged by a partner that
    control[partner_module.STATUS] = partner_module.RUNNING  # spins, yet takes no part:
    assert kernel_step() == 0  # its core is taken, and the steps back off
    assert control[partner_module.TICKET] == ticket + 3
    assert control[partner_module.BACKOFF] == 2 * partner_module.BACKOFF_STEPS


def test_the_partner_holds_the_step_of_a_job_it_may_still_read(own_partner):
    owner = object()
    own_partner.after_step(partner_module.PARKED_FLAG, owner)
    assert own_partner.holding is None
    own_partner.after_step(partner_module.STALE_FLAG, owner)
    assert own_partner.holding is owner
