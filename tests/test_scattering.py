"""Learned scattering network: shapes, complex arithmetic, parameter counts from the configs."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from scatterlab import ROOT
from scatterlab.errors import ConfigError
from scatterlab.models import LearnedScattering, count_parameters
from scatterlab.models.scattering import Projection, Standardization, Wavelet, as_complex, split


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    "experiment, expected",
    [
        ("cifar_scattering", 24_459_018),
        ("cifar_scattering_noskip", 12_251_018),
        ("imagenet_scattering", 53_495_144),
        ("imagenet_scattering model.skip=false", 29_052_584),
    ],
)
def test_reference_parameter_counts(experiment: str, expected: int) -> None:
    name, *rest = experiment.split()
    cfg = compose_train(f"experiment={name}", *rest)
    with torch.device("meta"):  # shapes only: skips the random init of 50M weights
        net = instantiate(cfg.model)
    assert count_parameters(net) == expected


def test_cifar_block_shapes() -> None:
    """Spatial sizes 32-32-16-16-8-8-4-4-2 and channel counts of each block (width 1/8)."""
    net = LearnedScattering(width=0.125)
    x = torch.randn(2, 3, 32, 32)
    sizes, widths = [], []
    for block in net.blocks:
        x = block(x)
        sizes.append(x.shape[-1])
        widths.append(x.shape[1])
    assert sizes == [32, 16, 16, 8, 8, 4, 4, 2]
    assert widths == [2 * w for w in (8, 16, 32, 64, 64, 64, 64, 64)]  # complex: 2 x width
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_spatial_sizes() -> None:
    cfg = compose_train("experiment=imagenet_scattering", "model.width=0.0625")
    net = instantiate(cfg.model)
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    for block in net.blocks:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [112, 112, 56, 56, 28, 28, 14, 14, 7, 6, 3]


def test_wavelet_on_complex_input_matches_complex_convolution() -> None:
    """The split layout computes (a + ib) * psi exactly as complex arithmetic does."""
    torch.manual_seed(0)
    wavelet = Wavelet(L=4, kind="morlet", subsample=True).double()
    x = torch.randn(2, 5 + 3, 16, 16, dtype=torch.float64)  # 5 channels, the first 3 complex
    low, re, im = wavelet(x, m=3)
    z = as_complex(x, 3).to(torch.complex128)
    f = wavelet.filters.to(torch.float64)
    psi = torch.complex(f[1:5], f[5:9])  # (L, 1, k, k), flipped filters
    pad = f.shape[-1] // 2
    zp = torch.nn.functional.pad(z.reshape(10, 1, 16, 16), (pad,) * 4, mode="reflect")
    expected = torch.nn.functional.conv2d(zp, psi, stride=2).reshape(2, 5 * 4, 8, 8)
    torch.testing.assert_close(torch.complex(re, im), expected)
    expected_low = torch.nn.functional.conv2d(zp, f[:1].to(zp.dtype), stride=2).reshape(2, 5, 8, 8)
    torch.testing.assert_close(as_complex(low, 3).to(torch.complex128), expected_low)


@pytest.mark.parametrize("subsample", [True, False])
@pytest.mark.parametrize("size", [16, 9, 4])
def test_wavelet_matrix_equals_convolution(subsample: bool, size: int) -> None:
    """The GEMM path (built matrix, or built on first use for other sizes) is the convolution."""
    torch.manual_seed(0)
    fast = Wavelet(L=4, kind="half_octave_1", subsample=subsample, size=16).double()
    slow = Wavelet(L=4, kind="half_octave_1", subsample=subsample, matmul_max_pixels=0).double()
    x = torch.randn(2, 3 + 2, size, size, dtype=torch.float64, requires_grad=True)
    outs = [torch.cat([t.flatten(1) for t in w(x, m=2)], 1) for w in (fast, slow)]
    torch.testing.assert_close(outs[0], outs[1])
    g = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(o, x, g)[0] for o in outs]
    torch.testing.assert_close(grads[0], grads[1])
    assert fast.matrix is not None and slow.matrix is None


@pytest.mark.parametrize("subsample", [True, False])
@pytest.mark.parametrize("size, max_pixels", [(16, 1024), (10, 1024), (16, 0)])
def test_complex_coefficients_match_the_general_transform(
    subsample: bool, size: int, max_pixels: int
) -> None:
    """The fused complex GEMM (built matrix, other sizes, large-map fallback) gives W z."""
    torch.manual_seed(0)
    wavelet = Wavelet(4, "half_octave_3_2", subsample, 16, max_pixels, complex_input=True)
    wavelet = wavelet.double()
    n, L = 3, 4
    x = torch.randn(2, 2 * n, size, size, dtype=torch.float64, requires_grad=True)
    re, im = wavelet.complex_coefficients(x)
    low, high_re, high_im = Wavelet(4, "half_octave_3_2", subsample, matmul_max_pixels=0).double()(
        x, n
    )
    h = re.shape[-1]
    low_re, low_im = split(low, n)
    expected_re = torch.cat([low_re[:, :, None], high_re.view(2, n, L, h, h)], 2)
    expected_im = torch.cat([low_im[:, :, None], high_im.view(2, n, L, h, h)], 2)
    torch.testing.assert_close(re, expected_re)
    torch.testing.assert_close(im, expected_im)
    g_re, g_im = torch.randn_like(re), torch.randn_like(im)
    grad = torch.autograd.grad((re * g_re + im * g_im).sum(), x)[0]
    expected = torch.autograd.grad((expected_re * g_re + expected_im * g_im).sum(), x)[0]
    torch.testing.assert_close(grad, expected)


def test_complex_projection_is_complex_matrix_product() -> None:
    torch.manual_seed(0)
    proj = Projection(in_channels=6, num_complex=4, out_channels=5).double()
    x = torch.randn(3, 6 + 4, 2, 2, dtype=torch.float64)
    out = proj(x)
    w = torch.complex(proj.weight[0], proj.weight[1])
    expected = torch.einsum("oc,bchw->bohw", w, as_complex(x, 4).to(torch.complex128))
    torch.testing.assert_close(as_complex(out, 5).to(torch.complex128), expected)
    # unitary init: the rows are orthonormal
    torch.testing.assert_close(w @ w.conj().T, torch.eye(5, dtype=w.dtype), atol=1e-5, rtol=0)


def test_standardization_whitens_complex_channels() -> None:
    std = Standardization(num_features=5 + 2, num_complex=2)
    x = torch.randn(64, 7, 4, 4) * 3 + 1
    y = as_complex(std(x), 2)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(y.abs().pow(2).mean(dim=(0, 2, 3)), torch.ones(5), atol=1e-3, rtol=0)


@pytest.mark.parametrize("nonlinearity", ["modulus", "soft_threshold", "relu", "tanh", "identity"])
@pytest.mark.parametrize("skip", [True, False])
def test_nonlinearities_train(nonlinearity: str, skip: bool) -> None:
    net = LearnedScattering(
        widths=(8, 16), width=1.0, skip=skip, nonlinearity=nonlinearity, input_size=16
    )
    x = torch.randn(4, 3, 16, 16)
    net(x).logsumexp(-1).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.blocks[0].proj.weight.grad.abs().sum() > 0


def test_modulus_collapses_phase() -> None:
    """Multiplying the input of block 1 by a global phase e^{i a} leaves a modulus net unchanged."""
    net = LearnedScattering(widths=(8, 8, 8), skip=False, input_size=16).eval()
    block = net.blocks[1]
    z = torch.randn(2, 8, 16, 16, dtype=torch.complex64)
    rot = z * torch.exp(torch.tensor(0.7j))
    split = lambda c: torch.cat([c.real, c.imag], 1)  # noqa: E731
    a, b = block.rho(split(z)), block.rho(split(rot))
    n = block.features
    # moduli are identical; only the low-pass (linear) channels rotate
    torch.testing.assert_close(a[:, 8:n], b[:, 8:n], atol=1e-5, rtol=1e-5)


def test_bad_model_config() -> None:
    with pytest.raises(ConfigError, match="model.nonlinearity"):
        LearnedScattering(nonlinearity="sigmoid")
    with pytest.raises(ConfigError, match="model.width"):
        LearnedScattering(width=-1)
    with pytest.raises(ConfigError, match="too small"):
        LearnedScattering(input_size=4)


def test_double_precision_model_trains() -> None:
    """float64 models (used for exact checks) keep float64 statistics."""
    net = LearnedScattering(widths=(8, 16), input_size=16).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    net(x).sum().backward()
    std = net.blocks[1].standardization
    assert std.running_mean.dtype == torch.float64 and std.running_mean.abs().sum() > 0


def test_modulus_gradient() -> None:
    """The fused modulus has the gradient of sqrt(re^2 + im^2), and 0 (not NaN) at 0."""
    from scatterlab.models.scattering import _modulus

    re = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    im = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_modulus, (re, im))
    torch.testing.assert_close(_modulus(re, im), (re**2 + im**2).sqrt())
    zero = torch.zeros(4, requires_grad=True)
    _modulus(zero, zero).sum().backward()
    assert torch.equal(zero.grad, torch.zeros(4))
