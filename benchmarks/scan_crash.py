"""Reproduce one scan launch (for compute-sanitizer): shape B,T,D (btd) dtype config fwd|bwd."""
import sys

import torch

from flashmarkov.scan import kernels

B, T, D = (int(v) for v in sys.argv[1].split(","))
dtype = getattr(torch, sys.argv[2])
cfg = kernels.ScanConfig(*(int(v) for v in sys.argv[3].split(",")))
x = torch.randn(B, T, D, device="cuda", dtype=dtype)
g = (0.9 + 0.1 * torch.rand(B, T, D, device="cuda")).to(dtype)
y, dg, dx = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
view = kernels.view_of(x, 1)
if sys.argv[4] == "fwd":
    kernels.scan_launch(g, x, y, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, config=cfg)
else:
    kernels.scan_launch(g, x, dx, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, y=torch.randn_like(x), dgates=dg, config=cfg)
torch.cuda.synchronize()
print("ok", sys.argv[1:])
