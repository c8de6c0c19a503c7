"""flashmarkov: fused, tiled GPU operators for PyTorch that never form an N x N matrix.

CUDA tensors run Triton kernels; CPU tensors run the exact PyTorch references.
"""

from __future__ import annotations

from .scan import linear_scan, pscan, scan_forward

__version__ = "0.1.0"

__all__ = ["linear_scan", "pscan", "scan_forward", "__version__"]
