"""Orthogonal periodic 2D wavelet transforms as dense matrices (small lattices only).

``wavelet_matrix(size, levels, wavelet)`` is the (N, N) matrix W, N = size^2, of the J-level
periodic DWT of ``scatterlab.wsgm.DWT2d`` (PyWavelets' ``periodization`` convention): for a
field x flattened row-major, c = W x stacks the coefficients coarse to fine,

    c = [x_J (n_J^2), xbar_J (3 n_J^2), xbar_{J-1} (3 n_{J-1}^2), ..., xbar_1 (3 n_1^2)],

n_j = size / 2^j, each detail block ordered [LH, HL, HH] then row-major. W is orthogonal
(W W^T = I), so a quadratic form H in pixels is W H W^T in wavelet coordinates.
``wavelet_blocks`` gives the index ranges of these blocks. Dense matrices cost N^2 memory,
hence the cap on ``size`` (64: N = 4096, 128 MiB in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.wsgm.dwt import DWT2d, check_size

MAX_DENSE_SIZE = 64


def wavelet_blocks(size: int, levels: int) -> dict[str, slice]:
    """Index ranges of the blocks of c = W x: "low" (x_J) and "detail_j" (xbar_j), j = 1..J."""
    check_size(size, levels)
    n = size >> levels
    blocks = {"low": slice(0, n * n)}
    start = n * n
    for j in range(levels, 0, -1):
        m = size >> j
        blocks[f"detail_{j}"] = slice(start, start + 3 * m * m)
        start += 3 * m * m
    return blocks


def wavelet_matrix(size: int, levels: int, wavelet: str = "haar") -> Tensor:
    """The orthogonal J-level DWT as a float64 (size^2, size^2) matrix (rows: analysis atoms)."""
    if size > MAX_DENSE_SIZE:
        raise ConfigError(
            f"dense wavelet matrices are for size <= {MAX_DENSE_SIZE}, got {size}: "
            "use a smaller lattice"
        )
    check_size(size, levels)
    dwt = DWT2d(wavelet, levels)
    n = size * size
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, size, size)
    low, details = dwt(eye)  # the transform of every basis image: columns of W
    cols = [low.reshape(n, -1)] + [d.reshape(n, -1) for d in reversed(details)]
    return torch.cat(cols, dim=1).T.contiguous()
