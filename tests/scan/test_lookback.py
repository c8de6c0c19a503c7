"""The look-back walk (``kernels._walk_back``) on prepared flags and records.

Programs of the scan kernel run in order under the interpreter, so there every predecessor has
published its inclusive prefix before a tile polls it and the walk over aggregates never runs;
this test runs the walk alone on chains of flags set up to need it (long runs of aggregates,
longer than the flag window, ending at an inclusive prefix), on the interpreter and the GPU."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from flashmarkov.scan import kernels

from ..conftest import DEVICE, HAS_CUDA, assert_close


@triton.jit
def _walk_kernel(p_flag, p_ws, p_out, j, i_chain, n_chains, n_tiles, BLOCK_Q: tl.constexpr, LB_WINDOW: tl.constexpr,
                 POLL_LOAD: tl.constexpr, THREADS: tl.constexpr):
    """p_out[1] [BLOCK_Q] <- the state entering a tile, c_b, that ``_walk_back`` resolves from predecessor j
    of chain i_chain (its c_a is not meaningful once resolved)."""
    o_q = tl.arange(0, BLOCK_Q)
    c_a, c_b = kernels._walk_back(p_flag, p_ws, j, i_chain, n_chains, n_tiles, tl.full([BLOCK_Q], 1.0, tl.float32),
                                  tl.zeros([BLOCK_Q], tl.float32), BLOCK_Q, LB_WINDOW, POLL_LOAD, THREADS)
    tl.store(p_out + BLOCK_Q + o_q, c_b)


def _expected(status: torch.Tensor, ws: torch.Tensor, j: int, chain: int, n_chains: int) -> torch.Tensor:
    """Compose predecessor j's aggregate, then j - 1's, ... down to the first inclusive prefix (float64)."""
    c_a = torch.ones(ws.shape[-1], dtype=torch.float64)
    c_b = torch.zeros_like(c_a)
    while True:
        t = j * n_chains + chain
        if status[t] == 2:
            return c_a * ws[2, t].double() + c_b
        c_b = c_a * ws[1, t].double() + c_b
        c_a = c_a * ws[0, t].double()
        j -= 1


# (window, ld.acquire polls): the interpreter has no inline assembly, so polls by load run on the GPU
# only; the GPU runs every variant under the ``gpu`` marker (the GPU test step's selection)
POLLS = [(False, False), (True, False)]
POLLS += [pytest.param(*p, marks=pytest.mark.gpu, id=f"{int(p[0])}-{int(p[1])}-gpu") for p in [*POLLS, (True, True)]]


@pytest.mark.parametrize("window, poll_load", POLLS, ids=lambda v: str(int(v)))
@pytest.mark.parametrize("run", [3, 45, 300], ids=lambda r: f"run{r}")
def test_walk_back(window, poll_load, run):
    """Chains of 400 tiles with statuses 1 (aggregate) and 2 (inclusive prefix; its aggregate
    fields NaN, as a tile that resolved at once never writes them), runs of up to ``run``
    aggregates; every predecessor j of chain 1 of 3 is walked from."""
    gen = torch.Generator().manual_seed(run + window)
    n_seg, n_chains, block_q = 400, 3, 16
    n_tiles = n_seg * n_chains
    status = torch.ones(n_tiles, dtype=torch.int32)
    seg = 0
    while seg < n_seg:  # an inclusive prefix, then a run of 0..run aggregates
        status[seg * n_chains : (seg + 1) * n_chains] = 2
        seg += 1 + int(torch.randint(0, run + 1, (1,), generator=gen))
    ws = torch.empty(3, n_tiles, block_q)
    ws[0] = 0.9 + 0.2 * torch.rand(n_tiles, block_q, generator=gen)
    ws[1:] = torch.randn(2, n_tiles, block_q, generator=gen)
    ws[:2, status == 2] = float("nan")
    ws[2, status == 1] = float("nan")
    num_warps = 4 if HAS_CUDA else 1
    flags, records = status.to(DEVICE), ws.to(DEVICE)
    for j in range(0, n_seg, 1 if window and not HAS_CUDA and run < 300 else 7):
        out = torch.full((2, block_q), float("nan"), device=DEVICE)
        _walk_kernel[(1,)](flags, records, out, j, 1, n_chains, n_tiles, block_q, window, poll_load, 32 * num_warps,
                           num_warps=num_warps)
        assert_close(out[1].cpu(), _expected(status, ws, j, 1, n_chains).float(), torch.float32, f"walk from {j}")
