"""flashmarkov: fused, tiled GPU operators for PyTorch that never form an N x N matrix.

CUDA tensors run Triton kernels; CPU tensors run the exact PyTorch references.
"""

from __future__ import annotations

from .attention import flash_attention, flash_attention_varlen
from .diffmax import (
    DiffmaxBisectModule,
    ExpMap,
    HillMap,
    TanhMap,
    diffmax_attention,
    diffmax_bisect,
    diffmax_bisect_monitored,
)
from .diffusion import DiffusionMap, FlashDiffusion
from .scan import linear_scan, pscan, scan_forward

__version__ = "0.1.0"

__all__ = [
    "flash_attention",
    "flash_attention_varlen",
    "linear_scan",
    "pscan",
    "scan_forward",
    "diffmax_bisect",
    "diffmax_bisect_monitored",
    "diffmax_attention",
    "DiffmaxBisectModule",
    "HillMap",
    "TanhMap",
    "ExpMap",
    "DiffusionMap",
    "FlashDiffusion",
    "__version__",
]
