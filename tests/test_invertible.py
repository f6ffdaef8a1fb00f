"""i-RevNet: inverse of forward, injective padding, memory-saving gradients, parameter counts,
bad configurations, and a tiny training run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scatterlab.errors import ConfigError
from scatterlab.invertible import IRevBlock, IRevNet, squeeze, unsqueeze
from scatterlab.invertible.reconstruction import reconstruction_error
from scatterlab.invertible.report import randomize_bn
from scatterlab.models import count_parameters
from tests.conftest import run_cli

CIFAR = dict(
    num_classes=10, in_channels=3, input_size=32, strides=[1, 2, 2], channels=[16, 64, 256]
)


def test_squeeze_is_a_permutation() -> None:
    x = torch.randn(2, 3, 8, 6)
    z = squeeze(x)
    assert z.shape == (2, 12, 4, 3)
    assert torch.equal(unsqueeze(z), x)
    assert torch.equal(z.flatten().sort().values, x.flatten().sort().values)


@pytest.mark.parametrize("randomize", [False, True])
def test_inverse_of_forward_cifar(one_thread, randomize: bool) -> None:
    """The official injective CIFAR layout (3 stages, 2 blocks each here), float32 and float64."""
    torch.manual_seed(0)
    net = IRevNet(blocks=[2, 2, 2], **CIFAR)
    if randomize:
        randomize_bn(net)
    x = torch.randn(4, 3, 32, 32)
    assert reconstruction_error(net, x, torch.float64) < 1e-10
    assert reconstruction_error(net, x, torch.float32) < 1e-5
    z = copy.deepcopy(net).eval()(x)
    assert z.shape == (4, 10)


def test_inverse_bijective_imagenet_layout(one_thread) -> None:
    """init_ds=2 and stride-2 stages only (the ImageNet layout, narrow): no padding, and the
    features have exactly as many numbers as the input."""
    torch.manual_seed(1)
    net = IRevNet(10, 3, 32, blocks=[1, 2, 1], strides=[2, 2, 2], channels=[24, 96, 384], init_ds=2)
    randomize_bn(net)
    assert not net.injective_only
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    z = net.double().eval().features(x)
    assert z[0].numel() == x[0].numel()
    assert reconstruction_error(net, x, torch.float64) < 1e-10
    assert reconstruction_error(net, x.float(), torch.float32) < 1e-5


def test_injective_padding() -> None:
    """3 -> 2 x 16 channels: the padded channels are zero and the inverse drops them."""
    block = IRevBlock(3, 16, stride=1, first=True).double().eval()
    assert block.pad == 29
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = block(x)
    assert y.shape == (2, 32, 8, 8)
    assert torch.all(y[:, :16] == 0)  # y2 = x2: the second half of the padded input, all pad
    assert block.inverse(y).shape == x.shape
    assert torch.allclose(block.inverse(y), x, atol=1e-14)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_recompute_gradients_equal_plain(one_thread, dropout: float) -> None:
    """Memory-saving backward = plain backprop (float64), BN running statistics updated once."""
    torch.manual_seed(0)
    net = IRevNet(blocks=[2, 2, 2], dropout=dropout, **CIFAR).double().train()
    other = copy.deepcopy(net)
    other.recompute = True
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    torch.manual_seed(1)
    F.cross_entropy(net(x), y).backward()
    torch.manual_seed(1)
    F.cross_entropy(other(x), y).backward()
    g1 = torch.cat([p.grad.flatten() for p in net.parameters()])
    g2 = torch.cat([p.grad.flatten() for p in other.parameters()])
    assert float((g1 - g2).norm() / g1.norm()) < 1e-10
    for a, b in zip(net.buffers(), other.buffers(), strict=True):
        assert torch.equal(a, b)


def test_recompute_stores_no_activations(one_thread) -> None:
    """What autograd saves for backward does not grow with depth under recompute."""

    def saved_bytes(blocks: int, recompute: bool) -> int:
        net = IRevNet(10, 1, 8, [blocks, blocks], [1, 2], [8, 32], recompute=recompute)
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.randn(8, 1, 8, 8)).sum()
        return sum(seen.values())

    assert saved_bytes(6, True) == saved_bytes(2, True)
    assert saved_bytes(6, False) > 2 * saved_bytes(2, False)


def test_parameter_counts_of_the_official_configs() -> None:
    """CIFAR (18 18 18, 16 64 256): no published count, ours pinned. ImageNet bijective
    (6 16 72 6, 24 96 384 1536, init_ds 2): 125.12M with the released code's 3x3 kernels, and
    with the paper's 1x1-3x3-1x1 kernels within 1% of its Table 1's 29M for i-RevNet (b).
    The injective layout (ours; the paper's (a) is 181M, layout unpublished): 193.5M."""
    cifar = IRevNet(blocks=[18, 18, 18], dropout=0.1, **CIFAR)
    assert count_parameters(cifar) == 6_274_826
    assert len(cifar.stack) == 54 and cifar.injective_only
    stages = ([6, 16, 72, 6], [2, 2, 2, 2], [24, 96, 384, 1536])
    with torch.device("meta"):  # counts only: no memory
        imagenet = IRevNet(1000, 3, 224, *stages, init_ds=2)
        paper = IRevNet(1000, 3, 224, *stages, init_ds=2, kernels=[1, 3, 1])
        injective = IRevNet(
            1000, 3, 224, [6, 16, 72, 6], [1, 2, 2, 2], [64, 256, 1024, 4096], 4, kernels=[1, 3, 1]
        )
    assert count_parameters(imagenet) == 125_120_356
    assert not imagenet.injective_only and imagenet.out_channels == 3072
    assert count_parameters(paper) == 29_201_092
    assert abs(count_parameters(paper) / 29e6 - 1) < 0.01
    assert count_parameters(injective) == 193_465_960
    assert injective.injective_only and injective.stack[0].pad == 128 - 48
    assert (injective.out_channels, injective.out_size) == (8192, 7)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_injective_imagenet_layout_inverts(dtype: torch.dtype, tol: float) -> None:
    """The injective ImageNet layout (4x4 initial squeeze, padded stride-1 first stage, 1x1-3x3-1x1
    kernels), one block per stage at 64 x 64: inverse(features(x)) = x."""
    torch.manual_seed(0)
    net = IRevNet(10, 3, 64, [1, 1, 1, 1], [1, 2, 2, 2], [32, 128, 512, 2048], 4, kernels=[1, 3, 1])
    net = net.to(dtype).eval()
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        z = net.features(x)
        assert z.shape == (2, 4096, 2, 2) and net.injective_only
        assert float((net.inverse(z) - x).norm() / x.norm()) < tol


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(input_size=30), "cannot be squeezed"),
        (dict(channels=[16, 60, 256]), "channels[1] = 64"),
        (dict(channels=[2, 8, 32]), "mult"),
        (dict(strides=[1, 2]), "same length"),
        (dict(in_channels=3, channels=[1, 4, 16], mult=1), "cannot shrink"),
        (dict(kernels=[1, 3]), "kernels"),
    ],
)
def test_bad_configurations_raise_config_error(kwargs: dict, words: str) -> None:
    args = {**CIFAR, "blocks": [1, 1, 1], **kwargs}
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        IRevNet(**args)


def test_bad_input_size_exits_with_one_line(tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        "experiment=quickstart_irevnet",
        "model.init_ds=2",
        "model.strides=[2,2,2]",
        f"hydra.run.dir={tmp_path}",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert err and "input_size=8" in err[0] and "cannot be squeezed" in err[0]


def test_channels_the_coupling_cannot_split_exit_with_one_line(tmp_path: Path) -> None:
    """The digits' 1 channel into a stride-2 first block: one half of 1 channel cannot be
    squeezed and split, so train.py stops with one error line naming the key."""
    proc = run_cli(
        "train.py",
        "experiment=quickstart_irevnet",
        "model.strides=[2,2,2]",
        f"hydra.run.dir={tmp_path}",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and "model.channels[0]" in err[0] and "even input" in err[0], err


def test_tiny_training_reaches_accuracy_and_stays_invertible(one_thread) -> None:
    """The quickstart net, 3 epochs of SGD on the embedded digits (in-process, no Lightning):
    >= 90% held-out accuracy, and the inverse still exact after training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = IRevNet(10, 1, 8, [2, 2, 2], [1, 2, 2], [8, 32, 128], recompute=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc >= 0.9, acc
    assert reconstruction_error(net, x[test[:64]], torch.float64) < 1e-10
    assert reconstruction_error(net, x[test[:64]], torch.float32) < 1e-5


def test_parameter_budget_is_checked_before_building() -> None:
    with pytest.raises(ConfigError, match="2,718,056,448 parameters"):
        IRevNet(2, 12, 1, blocks=[6], strides=[1], channels=[4096], mult=1)
