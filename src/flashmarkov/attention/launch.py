"""Lean kernel launches for the attention kernels: ``LeanKernel`` lives in
``flashmarkov._launch`` (shared with the scan); re-exported here for existing imports."""

from __future__ import annotations

from .._launch import MAX_BOUND, LeanKernel, _hooks_idle

__all__ = ["LeanKernel", "MAX_BOUND", "_hooks_idle"]
