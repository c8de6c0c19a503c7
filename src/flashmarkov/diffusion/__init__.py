"""``flashmarkov.diffusion``: exact diffusion maps without the N × N kernel.

- ``FlashDiffusion(Q, K, V, beta, alpha, h)``: the Markov operator of math.md §4 applied to V
  (Q = K: P·V; with h: the Doob transform P^h·V; new Q: the Nyström operator).
- ``DiffusionMap``: the scikit-learn-style estimator (fit / transform / eigenpairs / carré du
  champ / metric), built on the tiled products and the block eigensolver.
- ``asymmetric_operator(Q, K, beta, alpha)``: P between two point sets (Q ≠ K): matvec, rmatvec,
  svds (top singular triplets), eigs (Arnoldi, square only).
- the tiled kernels (``gaussian_matmat``, ``gaussian_rowsum``, ``gaussian_matmat_sym``,
  ``gaussian_softmax_apply``, ``knn``, ``bgh_sums``) and ``block_eigsh``.

CUDA tensors run Triton kernels, CPU tensors the chunked PyTorch reference; both never allocate
more than O(N · (d + k)) plus one bounded tile.
"""

from __future__ import annotations

import numpy as np
import torch

from .bandwidth import Bandwidth
from .dmap import DiffusionMap
from .eigensolver import EigResult, Stage, block_eigsh, dense_eigsh
from .operator import AsymmetricMarkov, SymmetricMarkov, check_alpha, check_h, check_positive, flash_diffusion, to_tensor
from .tiles import bgh_sums, gaussian_matmat, gaussian_matmat_sym, gaussian_rowsum, gaussian_softmax_apply, knn

Tensor = torch.Tensor

__all__ = [
    "FlashDiffusion",
    "DiffusionMap",
    "asymmetric_operator",
    "AsymmetricMarkov",
    "SymmetricMarkov",
    "Bandwidth",
    "EigResult",
    "Stage",
    "block_eigsh",
    "dense_eigsh",
    "gaussian_matmat",
    "gaussian_rowsum",
    "gaussian_matmat_sym",
    "gaussian_softmax_apply",
    "knn",
    "bgh_sums",
]


def _points_pair(Q: object, K: object) -> tuple[Tensor, Tensor, bool, torch.dtype]:
    """Q and K as tensors on one device, whether both were NumPy, and the compute dtype
    (float64 if either is float64, else float32)."""
    devices = {x.device for x in (Q, K) if isinstance(x, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"Q is on {Q.device} but K is on {K.device}; they must match")  # type: ignore[union-attr]
    device = devices.pop() if devices else None
    Qt, q_np = to_tensor("Q", Q, device=device)
    Kt, k_np = to_tensor("K", K, device=device)
    if Qt.shape[1] != Kt.shape[1]:
        raise ValueError(f"Q has {Qt.shape[1]} features (shape {tuple(Qt.shape)}) but K has {Kt.shape[1]}; they must match")
    dtype = torch.float64 if torch.float64 in (Qt.dtype, Kt.dtype) else torch.float32
    return Qt, Kt, q_np and k_np, dtype


def FlashDiffusion(  # noqa: N802 - the seed's public name
    Q: object, K: object, V: object, beta: float = 1.0, alpha: float = 0.5, h: object = None
) -> Tensor | np.ndarray:
    """The Markov operator of a Gaussian kernel applied to V (math.md §4, the general primitive):

        out_i = Σ_j W_ij w_j h_j V_j / Σ_j W_ij w_j h_j,  W_ij = exp(−β‖q_i − k_j‖²),
        w_j = (Σ_j' exp(−β‖k_j − k_j'‖²))^−α

    i.e. softmax attention with a Gaussian score and the per-key log-bias log w_j + log h_j.

    Args:
        Q: (N_q, d) query points; K: (N_k, d) key points (Q = K: P·V; new Q: Nyström).
        V: (N_k,) or (N_k, m) values at the keys.
        beta: β > 0. alpha: α in [0, 1]. h: optional (N_k,) Doob function, > 0 (P^h·V).
        Torch tensors (one device) or NumPy arrays; float64 computes in float64, other float
        dtypes in float32.

    Returns:
        (N_q, m) (or (N_q,) for 1-D V): NumPy when the inputs were NumPy, else a tensor of Q's
        dtype on their device; differentiable in Q, K, V and h (every gradient is a few more tiled
        products: ``flashmarkov.diffusion.tiles``' autograd section), not in β or α.
    """
    Qt, Kt, all_numpy, dtype = _points_pair(Q, K)
    beta = check_positive("beta", beta)
    alpha = check_alpha(alpha)
    Vt, v_np = to_tensor("V", V, ndim=(1, 2), device=Kt.device)
    if Vt.shape[0] != Kt.shape[0]:
        raise ValueError(f"V has {Vt.shape[0]} rows but K has {Kt.shape[0]} points; they must match (one value per key)")
    ht = check_h(h, Kt.shape[0], Kt.device)
    same = Q is K
    Kc = Kt.to(dtype)
    Qc = Kc if same else Qt.to(dtype)
    out = flash_diffusion(Qc, Kc, Vt.to(dtype).reshape(Vt.shape[0], -1), beta, alpha, ht)
    if Vt.dim() == 1:
        out = out[:, 0]
    if all_numpy and v_np:
        return out.cpu().numpy()
    return out.to(Qt.dtype if Qt.dtype in (torch.float16, torch.bfloat16) else dtype)


def asymmetric_operator(Q: object, K: object, beta: float = 1.0, alpha: float = 0.5) -> AsymmetricMarkov:
    """The row-stochastic operator P (N_q × N_k) of ``FlashDiffusion`` between query points Q and
    key points K (e.g. frames x_t and x_{t+1}), with matvec, rmatvec, svds and (square) eigs."""
    Qt, Kt, _, dtype = _points_pair(Q, K)
    return AsymmetricMarkov(Qt.to(dtype), Kt.to(dtype), check_positive("beta", beta), check_alpha(alpha))
