"""A second thread for the streaming steps' two matrix-vector products (Numba, CPU).

A streaming step at batch 1 reads all of W_ih and W_hh and little else: at H = 256 that is
1-2 MiB of float32, more than one core's L2 cache (1 MiB here), so one thread waits on memory
for most of the step (docs/kernels.md, "The streaming steps"). Where torch may use two threads
or more (`torch.get_num_threads()`) and the weights are large enough (`PAIR_MIN_BYTES`), the
plain LSTM and GRU steps split the rows of the two products with one partner thread: each core
reads half the weights, from its own cache where they fit.

The protocol, on one int64 array (`Partner.control`), its fields a cache line apart:

- the calling thread takes the partner (`OWNER`, compare-and-swap; a second caller that finds
  it taken runs its step alone), and only if the partner has acknowledged the last job (`ACK`)
  writes the job (`JOB`: dtype, batch, direction, the two products' addresses and sizes),
  copies x and h into the partner's buffer, marks every chunk of rows FREE with the new ticket
  and publishes the ticket;
- the partner, waiting on the ticket, claims its chunks (the first half of the weights' bytes)
  one at a time, FREE -> CLAIMED, computes each into its own buffer and marks it DONE, then
  acknowledges the ticket; the caller computes the other half into its output, takes the
  partner's chunks not yet claimed from the far end (FREE -> STOLEN), and adds the partner's
  results of each DONE chunk;
- a chunk the partner claimed and has not finished by the time the caller has waited about
  as long as it worked (its core taken by another thread) the caller takes over and computes
  itself (CLAIMED -> STOLEN; the partner's late result is dropped). So no step waits on a
  descheduled partner for long; the partner, still reading that job's weights, gets no new job
  before it acknowledges this one, and the step object that holds the weights is kept alive
  meanwhile (`after_step`); it only ever writes its own buffer;
- a step that had to take over a claimed chunk, or whose spinning partner took no part, runs
  the next `BACKOFF_STEPS` steps alone, twice as many each time in a row (the partner's core
  is taken: another process, or a thread pool's spinning threads such as libgomp's after a
  torch operator on two threads);
- between steps the partner spins for `SPIN_SECONDS` (after the first eighth, giving its core
  to any other thread ready to run there, the caller's included), then sleeps in short naps
  (`NAP_US`), and after `PARK_SECONDS` without a job parks on an event; a caller that finds it
  parked does the whole step itself and wakes it for the next.

Each row's sum is computed by the same loop either way (`_numba_common.add_matvecs` over a
chunk of rows; chunks a multiple of its loops' blocks of rows), so a step gives the same bits
with or without the partner, in either direction.
"""

from __future__ import annotations

import atexit
import os
import platform
import threading
import time

import numpy as np
import torch

from rnnkit.kernels._numba_atomics import (
    compare_swap,
    cycle_counter,
    exchange,
    load_acquire,
    nap,
    spin_pause,
    store_release,
    yield_processor,
)
from rnnkit.kernels._numba_common import add_matvecs, jit, jit_inline, rows_at

PAIR_MIN_BYTES = 512 * 1024  # of weights per step: at 256 KiB two threads were no faster
CHUNK_BYTES = 32 * 1024  # of weights per chunk of rows (at most MAX_CHUNKS chunks)
MAX_CHUNKS = 64
SPIN_SECONDS = 200e-6  # spin this long after a job before napping
NAP_US = 100  # then nap this long between looks at the ticket
PARK_SECONDS = 0.05  # and park after this long without a job

BACKOFF_STEPS = 200  # steps run alone after one whose partner was slow or absent, doubled
MAX_BACKOFF_DOUBLINGS = 12  # for each such step in a row (at most 200 * 4096 steps)
# where it runs: POSIX (usleep, sched_yield) on x86-64 (its time-stamp counter and `pause`)
SUPPORTED = os.name == "posix" and platform.machine() in ("x86_64", "AMD64")

BUFFER_BYTES_DEFAULT = 4 * 1024 * 1024  # the partner's copies of the vectors and its results

# fields of the control array, each on its own cache line where two threads write
TICKET, STATUS, OWNER, JOB, ACK, CHUNKS = 0, 8, 16, 24, 56, 64
BACKOFF = OWNER + 1  # steps left to run alone (the callers' line)
DOUBLINGS = OWNER + 2  # slow-partner steps in a row, with only steps alone between them
BUFFER, BUFFER_BYTES = OWNER + 3, OWNER + 4  # the partner's buffer: address, size (fixed)
DTYPE, BATCH, BACKWARD, N_PARTNER = range(JOB, JOB + 4)
PRODUCTS = JOB + 8  # product p's fields: PRODUCTS + 8 p + one of
WEIGHT, ROWS, COLS, VECTORS, OUT, CHUNK_ROWS, COUNT, RESULT = range(8)
CONTROL_SIZE = CHUNKS + 8 * MAX_CHUNKS
RUNNING, PARKED, STOPPED, NAPPING = 0, 1, 2, 3  # STATUS (RUNNING: serving or spinning)
FREE, CLAIMED, DONE, STOLEN = 0, 1, 2, 3  # a chunk's state: 4 * ticket + one of these
PARKED_FLAG, STALE_FLAG = 1, 2  # what `pair_products` returns, besides -1
NO_PARTNER = np.zeros(0, np.int64)  # the control of a step that runs alone


@jit
def cycles_now():
    return cycle_counter()


@jit
def exchange_status(control, status):
    """Set the partner's STATUS from Python (`exchange`)."""
    return exchange(control, STATUS, status)


# ---- the job -----------------------------------------------------------------------------------


@jit_inline
def _product_of(control, chunk):
    """(p, the chunk's first row in product p, its end) of chunk number `chunk`."""
    first = control[PRODUCTS + COUNT]  # chunks of product 0
    p = 0 if chunk < first else 1
    index = chunk - p * first
    base = PRODUCTS + 8 * p
    start = index * control[base + CHUNK_ROWS]
    last = index == control[base + COUNT] - 1  # the last chunk takes the rows left over
    end = control[base + ROWS] if last else start + control[base + CHUNK_ROWS]
    return p, start, end


@jit  # one compiled copy for its four callers
def _add_chunk(control, chunk, like, target):
    """The rows of chunk number `chunk` of the job in `control`: out[b] += W @ v[b] over them,
    v the partner's copy of the vectors, out the caller's output (`target` OUT) or the
    partner's results (RESULT, its rows zeroed first), arrays of `like`'s dtype."""
    p, start, end = _product_of(control, chunk)
    base = PRODUCTS + 8 * p
    rows, cols, batch = control[base + ROWS], control[base + COLS], control[BATCH]
    weight = rows_at(control[base + WEIGHT], rows, cols, like)
    vectors = rows_at(control[base + VECTORS], batch, cols, like)
    out = rows_at(control[base + target], batch, rows, like)
    if target == RESULT:
        out[:, start:end] = 0
    add_matvecs(weight[start:end], vectors, out[:, start:end], control[BACKWARD] != 0)


@jit_inline
def _add_result(control, chunk, like):
    """out[b] += the partner's results over the rows of chunk number `chunk` (DONE)."""
    p, start, end = _product_of(control, chunk)
    base = PRODUCTS + 8 * p
    rows, batch = control[base + ROWS], control[BATCH]
    results = rows_at(control[base + RESULT], batch, rows, like)
    out = rows_at(control[base + OUT], batch, rows, like)
    for b in range(batch):
        for j in range(start, end):
            out[b, j] += results[b, j]


@jit_inline
def _describe_product(control, p, weight, vectors, out, free):
    """Write product p (out += weight @ vectors[b] for each b) into the job, with a copy of
    `vectors` and room for the partner's results in its buffer from byte `free` on; returns
    (its number of chunks (rows in multiples of eight, about CHUNK_BYTES each), the next free
    byte)."""
    rows, cols = weight.shape
    batch, size = vectors.shape[0], weight.itemsize
    chunk_rows = max(8, CHUNK_BYTES // (cols * size) // 8 * 8)
    while (rows + chunk_rows - 1) // chunk_rows > MAX_CHUNKS // 2:
        chunk_rows *= 2
    base = PRODUCTS + 8 * p
    buffer = control[BUFFER]
    control[base + WEIGHT] = weight.ctypes.data
    control[base + ROWS] = rows
    control[base + COLS] = cols
    control[base + VECTORS] = buffer + free
    control[base + OUT] = out.ctypes.data
    control[base + CHUNK_ROWS] = chunk_rows
    control[base + COUNT] = max(1, rows // chunk_rows)
    control[base + RESULT] = buffer + free + batch * cols * size
    copy = rows_at(buffer + free, batch, cols, vectors)
    copy[:] = vectors
    return control[base + COUNT], free + batch * (cols + rows) * size


@jit_inline
def _partner_share(control, n_chunks):
    """How many of the first chunks the partner takes: those before the middle of the weights'
    bytes (a chunk goes to the side that holds most of it)."""
    total = control[PRODUCTS + ROWS] * control[PRODUCTS + COLS]
    total += control[PRODUCTS + 8 + ROWS] * control[PRODUCTS + 8 + COLS]
    done = 0
    for chunk in range(n_chunks):
        p, start, end = _product_of(control, chunk)
        size = (end - start) * control[PRODUCTS + 8 * p + COLS]
        if 2 * done + size > total:
            return chunk
        done += size
    return n_chunks


# ---- the two sides -----------------------------------------------------------------------------


@jit_inline
def _ready(control, weight_ih, x, weight_hh, h):
    """Whether the partner can take a job of these arrays: float32 or float64, room in its
    buffer, done with the last job (ACK), and not backing off. Takes the partner (OWNER) if
    so."""
    if weight_ih.itemsize != 4 and weight_ih.itemsize != 8:
        return False
    batch, size = x.shape[0], weight_ih.itemsize
    need = batch * (weight_ih.shape[0] + weight_ih.shape[1] + weight_hh.shape[0] + h.shape[1])
    if need * size > control[BUFFER_BYTES]:
        return False
    if compare_swap(control, OWNER, 0, 1) != 0:
        return False
    if control[BACKOFF] > 0:  # the partner was slow of late: its core is busy elsewhere
        control[BACKOFF] -= 1
    elif load_acquire(control, ACK) == control[TICKET]:
        return True
    store_release(control, OWNER, 0)
    return False


@jit  # not inlined: one compiled copy serves every step kernel (their first call: seconds less)
def pair_products(control, weight_ih, x, weight_hh, h, out_x, out_h, backward):
    """out_x[b] += weight_ih @ x[b] and out_h[b] += weight_hh @ h[b] for every sequence b, the
    rows shared with the partner of `control` (all arrays C-contiguous). Returns -1 without
    computing anything when the partner cannot take the job (`_ready`), else PARKED_FLAG if the
    partner was parked (the caller wakes it) plus STALE_FLAG if the step took over a chunk the
    partner had claimed and not finished (the partner may still read the job's weights: the
    caller keeps them alive, `after_step`)."""
    if not _ready(control, weight_ih, x, weight_hh, h):
        return -1
    ticket = control[TICKET] + 1
    control[DTYPE] = weight_ih.itemsize // 8  # 0: float32, 1: float64
    control[BATCH] = x.shape[0]
    control[BACKWARD] = 1 if backward else 0
    n_ih, free = _describe_product(control, 0, weight_ih, x, out_x, 0)
    n_hh, free = _describe_product(control, 1, weight_hh, h, out_h, free)
    n_chunks = n_ih + n_hh
    n_partner = _partner_share(control, n_chunks)
    control[N_PARTNER] = n_partner
    for chunk in range(n_chunks):
        control[CHUNKS + 8 * chunk] = 4 * ticket + FREE
    exchange(control, TICKET, ticket)  # publish: the partner reads the job after this
    status = load_acquire(control, STATUS)
    flags = PARKED_FLAG if status == PARKED else 0
    started = cycle_counter()
    for k in range(n_chunks - n_partner):  # the caller's chunks, in this call's direction
        _add_chunk(control, n_chunks - 1 - k if backward else n_partner + k, x, OUT)
    taken = 0
    for k in range(n_partner):  # the partner's not yet claimed, from the end it reaches last
        chunk = k if backward else n_partner - 1 - k
        if not _take(control, chunk, ticket, FREE):
            break  # the partner claims in order: it has claimed the rest
        _add_chunk(control, chunk, x, OUT)
        taken += 1
    worked = cycle_counter() - started
    for chunk in range(n_partner):  # the partner's: its results, or the chunk taken over
        flags |= _collect(control, chunk, ticket, x, started + 2 * worked)
    # a partner that was spinning yet claimed nothing, or did not finish a chunk in time, had
    # its core taken (another process, a pool's spinning threads; a spinning partner then takes
    # the caller's core too): alone for a while, twice as long each time in a row
    if flags & STALE_FLAG or (status == RUNNING and taken == n_partner):
        doublings = control[DOUBLINGS]
        control[BACKOFF] = BACKOFF_STEPS << doublings
        control[DOUBLINGS] = min(doublings + 1, MAX_BACKOFF_DOUBLINGS)
    elif taken < n_partner:  # it took part, in time (a napping partner tells nothing)
        control[DOUBLINGS] = 0
    store_release(control, OWNER, 0)
    return flags


@jit_inline
def _take(control, chunk, ticket, state):
    """Take chunk `chunk` of job `ticket` from the partner if it is in `state` (-> STOLEN)."""
    slot, expected = CHUNKS + 8 * chunk, 4 * ticket + state
    return compare_swap(control, slot, expected, 4 * ticket + STOLEN) == expected


@jit_inline
def _collect(control, chunk, ticket, like, deadline):
    """Add the partner's results of chunk `chunk` once it is DONE; past `deadline` (cycles)
    take over a chunk it still holds and compute it here (returns STALE_FLAG then, else 0)."""
    slot = CHUNKS + 8 * chunk
    while True:
        state = load_acquire(control, slot)
        if state == 4 * ticket + DONE:
            _add_result(control, chunk, like)
            return 0
        if state != 4 * ticket + CLAIMED:
            return 0  # taken by the caller before
        if cycle_counter() > deadline and _take(control, chunk, ticket, CLAIMED):
            _add_chunk(control, chunk, like, OUT)
            return STALE_FLAG
        spin_pause()


@jit
def serve(control, spin_cycles, park_cycles, like32, like64):
    """The partner's loop: wait for a ticket, claim and compute its chunks of the job in order
    until one is taken, acknowledge the ticket, wait again; spin for `spin_cycles` after a job,
    then nap, and return PARKED after `park_cycles` without one (STOPPED when told to stop)."""
    exchange(control, STATUS, RUNNING)
    seen = load_acquire(control, ACK)  # a ticket published before this started is served
    idle_since = cycle_counter()
    while True:
        ticket = load_acquire(control, TICKET)
        if ticket != seen:
            if compare_swap(control, STATUS, NAPPING, RUNNING) == STOPPED:
                return STOPPED
            seen = ticket
            _serve_job(control, ticket, like32, like64)
            store_release(control, ACK, ticket)  # the caller may publish the next job now
            idle_since = cycle_counter()
            continue
        status = load_acquire(control, STATUS)
        if status == STOPPED:
            return STOPPED
        idle = cycle_counter() - idle_since
        if idle < spin_cycles // 8:  # the next step of a stream comes within microseconds
            spin_pause()
        elif idle < spin_cycles:  # a core shared with the caller goes to the caller
            yield_processor()
        elif idle < park_cycles:
            if status == RUNNING:
                compare_swap(control, STATUS, RUNNING, NAPPING)
            nap(NAP_US)
        elif compare_swap(control, STATUS, status, PARKED) != status:
            continue  # told to stop meanwhile: seen above
        elif load_acquire(control, TICKET) == seen:  # parked, and no job came meanwhile
            return PARKED
        else:
            exchange(control, STATUS, RUNNING)


@jit_inline
def _serve_job(control, ticket, like32, like64):
    """Claim and compute the partner's chunks of job `ticket` into its results, first to last
    (last to first when the job's direction is backward), until a claim fails (the caller has
    taken the rest, or finished the job). The job's fields stay as they are until this is
    acknowledged (the caller publishes no job before), so they are read as they were written."""
    n_partner = load_acquire(control, N_PARTNER)
    backward = load_acquire(control, BACKWARD) != 0
    float64 = load_acquire(control, DTYPE) == 1
    for k in range(n_partner):
        chunk = n_partner - 1 - k if backward else k
        slot = CHUNKS + 8 * chunk
        if compare_swap(control, slot, 4 * ticket + FREE, 4 * ticket + CLAIMED) != (
            4 * ticket + FREE
        ):
            return
        if float64:
            _add_chunk(control, chunk, like64, RESULT)
        else:
            _add_chunk(control, chunk, like32, RESULT)
        compare_swap(control, slot, 4 * ticket + CLAIMED, 4 * ticket + DONE)  # unless taken


# ---- the partner thread ------------------------------------------------------------------------


class Partner:
    """The partner thread of this process and its control array (see the module docstring)."""

    def __init__(self):
        self.control = np.zeros(CONTROL_SIZE, np.int64)
        self.buffer = np.zeros(BUFFER_BYTES_DEFAULT // 8, np.float64)  # 8-byte aligned
        self.control[BUFFER] = self.buffer.ctypes.data
        self.control[BUFFER_BYTES] = self.buffer.nbytes
        self.holding: object = None  # the step of a job the partner may still be reading
        self._wake = threading.Event()
        self._stopping = False
        self.wakes = 0  # times woken from parked
        self.serving = threading.Event()  # set once the loop runs (its clock measured, loaded)
        self._thread = threading.Thread(target=self._run, name="rnnkit-step-partner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rate = _cycles_per_second()
        spin, park = int(rate * SPIN_SECONDS), int(rate * PARK_SECONDS)
        like32, like64 = np.zeros(0, np.float32), np.zeros(0, np.float64)
        serve(self.control, 0, 0, like32, like64)  # compiled or loaded: returns PARKED at once
        exchange_status(self.control, RUNNING)
        self.serving.set()
        while not self._stopping:
            if serve(self.control, spin, park, like32, like64) == STOPPED:
                return
            self._wake.wait()
            self._wake.clear()
            self.wakes += 1

    def after_step(self, flags: int, owner: object) -> None:
        """See the module's `after_step`."""
        if flags & PARKED_FLAG:
            self._wake.set()
        if flags & STALE_FLAG:  # no job goes to the partner before it acknowledges this one,
            self.holding = owner  # so this is the only one it can be reading

    def stop(self, timeout: float = 1.0) -> None:
        """End the thread (at exit, or in tests)."""
        self._stopping = True
        exchange_status(self.control, STOPPED)
        self._wake.set()
        self._thread.join(timeout)


def _cycles_per_second() -> float:
    """The time-stamp counter's rate, over 5 ms."""
    cycles_now()  # compiled (or loaded from the cache) before the measurement
    start, counted = time.perf_counter(), cycles_now()
    time.sleep(0.005)
    return (cycles_now() - counted) / (time.perf_counter() - start)


_partner: Partner | None = None
_lock = threading.Lock()


def partner_control(weight_bytes: int) -> np.ndarray:
    """The control array for a step that reads `weight_bytes` of weights: the partner's (started
    on first use) where torch may use two threads or more and the weights are at least
    `PAIR_MIN_BYTES`, else `NO_PARTNER` (the step runs alone)."""
    if weight_bytes < PAIR_MIN_BYTES or torch.get_num_threads() < 2 or not SUPPORTED:
        return NO_PARTNER
    return (_partner or _started()).control


def wait_until_serving(timeout: float = 120.0) -> bool:
    """Wait until this process's partner (if one was started) serves: its first seconds load
    its loop from Numba's cache (or compile it) in the background, holding the GIL at times,
    which a benchmark should not time. True if it serves (or none was started)."""
    return _partner is None or _partner.serving.wait(timeout)


def after_step(flags: int, owner: object) -> None:
    """What a step does after its kernel returned `flags` (`pair_products`): wake a parked
    partner; after taking over a chunk the partner still computes, keep `owner` (the step
    object, holder of the weights' arrays) alive until the partner has let go of the job."""
    if flags > 0 and _partner is not None:
        _partner.after_step(flags, owner)


def _started() -> Partner:
    global _partner
    with _lock:
        if _partner is None:
            _partner = Partner()
    return _partner


def _forget_after_fork() -> None:
    """In a forked child the thread is gone: start a new partner there when one is needed."""
    global _partner, _lock
    _partner, _lock = None, threading.Lock()


def _stop_at_exit() -> None:
    if _partner is not None:
        _partner.stop(timeout=0.1)


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_at_exit)
