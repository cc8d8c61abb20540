"""`unowned` views and `alive`: a loop that reads a local array through an unowned view must keep
the array's owner until the loop ends, or Numba frees it after its last use and the loop's own
allocations take its memory (the kernels' loops rely on this, `_numba_common.alive`). Without
the `alive` call below the same function returned -20.0 instead of 60.0: the owner's block went
to the first `other`."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from rnnkit.kernels._numba_common import alive, unowned


@njit
def _read_through_view_while_allocating(size, rounds):
    owner = np.full(size, 7.0)
    view = unowned(owner)  # the owner's last use but for `alive` after the loop
    total = 0.0
    for _ in range(rounds):
        other = np.full(size, -1.0)  # a new block each round: freed memory is taken first
        total += view[0] + other[0]
    alive(owner)
    return total


@pytest.mark.parametrize("size", [16, 1000, 100_000])
def test_alive_keeps_the_owner_of_an_unowned_view_until_the_loop_ends(size):
    assert _read_through_view_while_allocating(size, 10) == 10 * (7.0 - 1.0)
