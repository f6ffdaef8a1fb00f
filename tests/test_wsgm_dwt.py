"""Orthogonal periodic DWT: exact orthogonality, perfect reconstruction, clear errors."""

import warnings

import numpy as np
import pytest
import pywt
import torch

from scatterlab.errors import ConfigError
from scatterlab.wsgm import SGM, WSGM, DWT2d

pytestmark = pytest.mark.usefixtures("one_thread")


WAVELETS = ["haar", "db2", "db4"]
# Every orthogonal wavelet PyWavelets ships (haar, db1-38, sym2-20, coif1-17: 75) except
# 'dmey', whose truncated filter is not exactly orthonormal (rejected, tested below).
ORTHOGONAL = [
    w for w in pywt.wavelist(kind="discrete") if pywt.Wavelet(w).orthogonal and w != "dmey"
]


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
    with pytest.raises(ConfigError, match="only approximately orthogonal"):
        DWT2d("dmey", 1)
    with pytest.raises(ConfigError, match="unknown wavelet"):
        WSGM(size=16, levels=1, wavelet="nope")


def test_other_bad_configs() -> None:
    with pytest.raises(ConfigError, match="time grid"):
        SGM(size=8, net={"base_channels": 8}).sample(1, 2, grid="cosine")
    with pytest.raises(ConfigError, match="levels"):
        WSGM(size=16, levels=0)


def test_every_orthogonal_pywt_wavelet_is_listed() -> None:
    assert len(ORTHOGONAL) >= 70 and {"haar", "db2", "db4", "sym8", "coif3"} <= set(ORTHOGONAL)


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("wavelet", ORTHOGONAL)
def test_equals_pywavelets_periodization(wavelet: str, levels: int) -> None:
    """Coefficients equal pywt.wavedec2(mode="periodization"), band by band, at every level.

    16 x 32 fields (non-square), two channels, filters up to 102 taps (several wraps).
    """
    x = np.random.default_rng(levels).standard_normal((2, 2, 16, 32))
    t = DWT2d(wavelet, levels)
    low, details = t(torch.from_numpy(x))
    with warnings.catch_warnings():  # pywt warns when the filter is longer than the signal
        warnings.simplefilter("ignore")
        ref = pywt.wavedec2(x, wavelet, mode="periodization", level=levels, axes=(-2, -1))
        rec = pywt.waverec2(ref, wavelet, mode="periodization", axes=(-2, -1))
    np.testing.assert_allclose(low.numpy(), ref[0], atol=1e-10)
    for j in range(1, levels + 1):
        c_h, c_v, c_d = ref[-j]  # pywt lists the coarsest details first
        ours = details[j - 1].numpy().reshape(2, 3, 2, 16 >> j, 32 >> j)
        np.testing.assert_allclose(ours[:, 0], c_h, atol=1e-10)
        np.testing.assert_allclose(ours[:, 1], c_v, atol=1e-10)
        np.testing.assert_allclose(ours[:, 2], c_d, atol=1e-10)
    # the inverse is pywt's too (and exact)
    back = t.inverse(low, details).numpy()
    np.testing.assert_allclose(back, rec, atol=1e-10)
    np.testing.assert_allclose(back, x, atol=1e-10)


def test_db2_differs_from_the_old_zero_phase_transform() -> None:
    """The phase matters: a one-sample shift of the input changes db2 coefficients."""
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    t = DWT2d("db2", 1)
    a = t(x)[0]
    b = t(torch.roll(x, (1, 1), dims=(-2, -1)))[0]
    assert (a - b).abs().max() > 1e-3
    c_a = pywt.dwt2(x[0, 0].numpy(), "db2", mode="periodization")[0]
    np.testing.assert_allclose(a[0, 0].numpy(), c_a, atol=1e-12)
