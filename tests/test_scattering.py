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


# --- batch-last path (complex skip blocks on the CPU) against the reference path -------------


def _reference_copy(net: LearnedScattering) -> LearnedScattering:
    """The same network (same weights and buffers) running every block's reference path."""
    import copy

    ref = copy.deepcopy(net)
    for block in ref.blocks:
        block.batch_last = False
    return ref


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    "dtype, training, input_size",  # 14: odd maps (7) are cropped
    [
        (torch.float64, True, 16),
        (torch.float64, False, 14),
        (torch.float32, True, 14),
        (torch.float32, False, 16),
    ],
)
def test_batch_last_path_equals_reference(
    dtype: torch.dtype, training: bool, input_size: int
) -> None:
    """Outputs, gradients (weights and input) and running statistics of the batch-last path
    equal the reference path's within rounding (float32 GEMMs)."""
    torch.manual_seed(0)
    net = LearnedScattering(widths=(8, 16, 16, 32), input_size=input_size, cpu_matmul="float32").to(
        dtype
    )
    ref = _reference_copy(net)
    net.train(training), ref.train(training)
    if not training:  # non-trivial running estimates
        for block in (*net.blocks, *ref.blocks):
            std = block.standardization
            g = torch.Generator().manual_seed(1)
            std.running_mean.copy_(torch.randn(std.running_mean.shape, generator=g) * 0.1)
            std.running_var.copy_(torch.rand(std.running_var.shape, generator=g) + 0.5)
    x = torch.randn(6, 3, input_size, input_size, dtype=dtype)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    # the path is taken by every block with complex input (all but the first)
    h = torch.empty(6, 16, input_size, input_size, dtype=dtype)  # block 0's output
    assert net.blocks[1]._batch_last_applies(h) and not net.blocks[0]._batch_last_applies(x)
    out, expected = net(xs[0]), ref(xs[1])
    tol = 1e-6 if dtype == torch.float64 else 2e-5  # the reference normalizes in float32
    assert _rel_err(out, expected) < tol
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [xs[0], *net.parameters()], g)
    expected_grads = torch.autograd.grad(expected, [xs[1], *ref.parameters()], g)
    for a, b in zip(grads, expected_grads, strict=True):
        assert a.shape == b.shape and _rel_err(a, b) < 10 * tol
    for a, b in zip(net.buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    if training:  # the estimates moved
        assert net.blocks[1].standardization.running_mean.abs().sum() > 0


def test_batch_last_block_output_is_a_view_of_batch_last_storage() -> None:
    """Blocks return (B, C, H, W) tensors stored (C, H, W, B): the next block reads them
    without a copy, and hooks on `blocks.<i>` see the reference path's values."""
    torch.manual_seed(0)
    net = LearnedScattering(widths=(8, 16, 16), input_size=16, cpu_matmul="float32")
    ref = _reference_copy(net)
    x = torch.randn(4, 3, 16, 16)
    h = net.blocks[1](net.blocks[0](x))
    assert h.shape == (4, 32, 8, 8) and h.permute(1, 2, 3, 0).is_contiguous()
    torch.testing.assert_close(h, ref.blocks[1](ref.blocks[0](x)), rtol=1e-5, atol=1e-6)
    # per-pixel normalization: unit norm over the channels
    torch.testing.assert_close(h.pow(2).sum(1), torch.ones(4, 8, 8), rtol=1e-5, atol=1e-5)


def test_hooks_on_submodules_see_the_reference_path() -> None:
    """A pre-hook on blocks.<i>.proj gets (rho(W x), mean, scale) as on the reference path."""
    torch.manual_seed(0)
    net = LearnedScattering(widths=(8, 16), input_size=16, cpu_matmul="float32")
    seen = []
    handle = net.blocks[1].proj.register_forward_pre_hook(lambda m, args: seen.append(args))
    x = torch.randn(4, 3, 16, 16)
    out = net(x)
    handle.remove()
    assert len(seen) == 1 and seen[0][0].shape == (4, net.blocks[1].features * 3 // 2, 8, 8)
    torch.testing.assert_close(out, _reference_copy(net)(x))


def test_batch_last_saves_only_what_backward_needs() -> None:
    """Saved activations of a complex skip block: Y = W z (10 n (1 + L) P B values; M = |Y|
    is recomputed) and the output, against more than twice as much on the reference path."""
    torch.manual_seed(0)
    B, n, out_ch, L, size = 8, 16, 32, 4, 16
    net = LearnedScattering(widths=(n, out_ch), input_size=2 * size, cpu_matmul="float32")
    block = net.blocks[1]
    x = net.blocks[0](torch.randn(B, 3, 2 * size, 2 * size)).detach().requires_grad_()

    held = {t.untyped_storage().data_ptr() for t in (*net.parameters(), *net.buffers())}
    held |= {t.untyped_storage().data_ptr() for t in block.wavelet._matrices.values()}

    def saved_bytes(fn) -> int:
        total = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in held:  # activations, not the weights or W's matrix
                total[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x).sum()
        return sum(total.values())

    P = size * size
    needed = (2 * n * (1 + L) + 2 * out_ch) * P * B * 4  # Y, output (float32)
    needed += 2 * block.proj.weight.numel() * 4 + 2**16  # P_j reordered, statistics
    fast = saved_bytes(block.forward_batch_last)
    reference = saved_bytes(block.forward_reference)
    assert fast <= needed and reference >= 2.2 * fast


def test_cpu_matmul_dtype() -> None:
    """auto is bf16 exactly where the CPU has native bf16; float64 models stay float64; the
    bf16 network's logits are float32 and close to the float32 network's."""
    from scatterlab.models.scattering import _cpu_has_bf16, matmul_dtype

    bf16 = torch.bfloat16
    assert matmul_dtype("auto", torch.float32) == (bf16 if _cpu_has_bf16() else torch.float32)
    assert matmul_dtype("bfloat16", torch.float32) == bf16
    assert matmul_dtype("bfloat16", torch.float64) == torch.float64
    assert matmul_dtype("float32", torch.float32) == torch.float32
    with pytest.raises(ConfigError, match="model.cpu_matmul"):
        LearnedScattering(cpu_matmul="fp8")
    torch.manual_seed(0)
    net = LearnedScattering(widths=(8, 16, 16), input_size=16, cpu_matmul="float32").eval()
    x = torch.randn(8, 3, 16, 16)
    expected = net(x)
    for block in net.blocks:
        block.cpu_matmul = "bfloat16"
    h = net.blocks[1](net.blocks[0](x))
    assert h.dtype == bf16
    out = net(x)
    assert out.dtype == torch.float32
    assert 0 < _rel_err(out, expected) < 0.05  # bf16 rounding (2^-8), not float32's
