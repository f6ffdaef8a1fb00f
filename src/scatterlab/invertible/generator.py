"""Generative networks as inverse problems with scattering transforms (Angles & Mallat, ICLR 2018).

The encoder is fixed, not learned: the scattering transform S_J x (kymatio `Scattering2D`, J
scales, L angles, order 2), flattened, centred and projected on its first `dim` principal
components, each divided by its standard deviation (whitened):

    Phi(x) = Lambda^{-1/2} U^T (S_J x - mean),   U, Lambda: top `dim` eigenpairs of Cov(S_J x),

so that on the training set the embedding has mean 0 and identity covariance. A convolutional
generator G is trained to invert it, min ||x - G(Phi(x))||_1. Because Phi is whitened, Gaussian
white noise z ~ N(0, I_dim) is a natural input for new images, and linear interpolation between
two embeddings a path between two images. (The paper's CelebA embedding is J = 4, 512 dimensions,
"ScatJ4_projected512_1norm"; its exact normalisation is not reproduced here.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ScatteringEmbedding(nn.Module):
    """Phi: (B, C, N, N) -> (B, dim), fixed; `fit` estimates the mean and the whitened PCA.

    J scales (N divisible by 2^J), L angles, order 2. D = C * (1 + J L + L^2 J (J - 1) / 2)
    * (N / 2^J)^2 scattering coefficients; dim <= D.
    """

    def __init__(self, J: int, shape: int, channels: int, dim: int, L: int = 8) -> None:
        super().__init__()
        from kymatio.torch import Scattering2D  # slow to import: only this model needs it

        self.scattering = Scattering2D(J=J, shape=(shape, shape), L=L, max_order=2)
        n_coef = 1 + J * L + L * L * J * (J - 1) // 2
        self.n_scat = channels * n_coef * (shape // 2**J) ** 2
        self.dim = dim
        self.register_buffer("mean", torch.zeros(self.n_scat))
        self.register_buffer("proj", torch.zeros(self.n_scat, dim))
        self.register_buffer("eigenvalues", torch.ones(dim))

    def scatter(self, x: Tensor) -> Tensor:
        """S_J x flattened: (B, C, N, N) -> (B, D)."""
        return self.scattering(x.contiguous()).flatten(1)

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Mean and whitened principal directions of S_J x over the images x (n, C, N, N)."""
        s = torch.cat([self.scatter(b) for b in x.split(256)]).double()
        mean = s.mean(0)
        c, n = s - mean, max(len(s) - 1, 1)
        if len(c) < c.shape[1]:
            # fewer images than coefficients (CIFAR, J=3: 10,416): the eigenvectors of the
            # n x n Gram matrix give the same principal directions, c^T u / sqrt(n lambda), at
            # O(n^2 D) instead of the O(D^3) of the D x D covariance (minutes on a CPU)
            evals, u = torch.linalg.eigh(c @ c.T / n)  # ascending
            evals, u = evals.flip(0)[: self.dim], u.flip(1)[:, : self.dim]
            evals = evals.clamp_min(evals[0] * 1e-10)  # directions of zero variance: no blow-up
            evecs = c.T @ u / (n * evals).sqrt()
        else:
            evals, evecs = torch.linalg.eigh(c.T @ c / n)  # ascending
            evals, evecs = evals.flip(0)[: self.dim], evecs.flip(1)[:, : self.dim]
            evals = evals.clamp_min(evals[0] * 1e-10)
        self.mean.copy_(mean)
        self.proj.copy_(evecs / evals.sqrt())
        self.eigenvalues.copy_(evals)

    def forward(self, x: Tensor) -> Tensor:
        return (self.scatter(x) - self.mean) @ self.proj


class Generator(nn.Module):
    """G: (B, dim) -> (B, channels, size, size): a linear map to (width, 4, 4) (or size x size
    when smaller), then upsampling x2 + conv3x3 + BN + ReLU stages halving the width, and a
    final conv3x3 to the image channels."""

    def __init__(self, dim: int, channels: int, size: int, width: int = 128) -> None:
        super().__init__()
        start = min(4, size)
        steps = int(math.log2(size // start))
        self.start, self.width = start, width
        self.fc = nn.Linear(dim, width * start * start)
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU()]
        w = width
        for _ in range(steps):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(w, max(w // 2, 16), 3, padding=1, bias=False),
                nn.BatchNorm2d(max(w // 2, 16)),
                nn.ReLU(),
            ]
            w = max(w // 2, 16)
        layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        layers.append(nn.Conv2d(w, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.fc(z).view(-1, self.width, self.start, self.start))


def psnr(x: Tensor, y: Tensor, peak: float = 1.0) -> float:
    """10 log10(peak^2 / MSE) in dB over all pixels of the batch (images in [0, peak])."""
    mse = float((x.double() - y.double()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
