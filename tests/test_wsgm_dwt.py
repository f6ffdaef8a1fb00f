"""Orthogonal periodic DWT: exact orthogonality, perfect reconstruction, clear errors."""

import pytest
import torch

from scatterlab.errors import ConfigError
from scatterlab.wsgm import SGM, WSGM, DWT2d

pytestmark = pytest.mark.usefixtures("one_thread")


WAVELETS = ["haar", "db2", "db4"]


def _matrix(t: DWT2d, size: int) -> torch.Tensor:
    """The full J-level transform as a (size^2, size^2) matrix, coefficients flattened."""
    basis = torch.eye(size * size, dtype=torch.float64).reshape(-1, 1, size, size)
    low, details = t(basis)
    return torch.cat([low.flatten(1)] + [d.flatten(1) for d in details], dim=1)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_transform_is_orthogonal(wavelet: str, levels: int) -> None:
    size = 16
    W = _matrix(DWT2d(wavelet, levels), size)
    assert W.shape == (size * size, size * size)
    eye = torch.eye(size * size, dtype=torch.float64)
    assert torch.allclose(W @ W.T, eye, atol=1e-12)
    assert torch.allclose(W.T @ W, eye, atol=1e-12)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_perfect_reconstruction_and_energy(wavelet: str, levels: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    t = DWT2d(wavelet, levels)
    low, details = t(x)
    assert low.shape == (4, 3, 32 >> levels, 32 >> levels)
    assert [d.shape for d in details] == [(4, 9, 32 >> j, 32 >> j) for j in range(1, levels + 1)]
    energy = low.pow(2).sum() + sum(d.pow(2).sum() for d in details)
    assert torch.allclose(energy, x.pow(2).sum(), rtol=1e-12)
    assert (t.inverse(low, details) - x).abs().max() < 1e-12
    # float32 too, to float precision
    x32 = x.float()
    low, details = t(x32)
    assert (t.inverse(low, details) - x32).abs().max() < 1e-5


def test_haar_lowpass_is_scaled_block_average() -> None:
    x = torch.randn(2, 1, 8, 8)
    low, _ = DWT2d("haar", 1)(x)
    avg = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(low, 2 * avg, atol=1e-6)  # orthonormal: mean doubles per level


def test_size_not_divisible_by_2_to_the_J() -> None:
    with pytest.raises(ConfigError, match="not divisible by 2\\^J"):
        DWT2d("haar", 3)(torch.zeros(1, 1, 12, 12))
    with pytest.raises(ConfigError, match="not divisible"):
        WSGM(size=24, levels=4)


def test_unknown_or_non_orthogonal_wavelet() -> None:
    with pytest.raises(ConfigError, match="unknown wavelet 'db99x'"):
        DWT2d("db99x", 1)
    with pytest.raises(ConfigError, match="not orthogonal"):
        DWT2d("bior2.2", 1)
    with pytest.raises(ConfigError, match="unknown wavelet"):
        WSGM(size=16, levels=1, wavelet="nope")


def test_other_bad_configs() -> None:
    with pytest.raises(ConfigError, match="time grid"):
        SGM(size=8, net={"base_channels": 8}).sample(1, 2, grid="cosine")
    with pytest.raises(ConfigError, match="levels"):
        WSGM(size=16, levels=0)
