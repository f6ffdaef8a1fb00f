"""The P_j-input capture folds the standardization into the count sketch (hooks.LayerCapture)."""

from __future__ import annotations

import torch

from scatterlab.analysis.hooks import LayerCapture
from scatterlab.models import LearnedScattering
from scatterlab.rainbow.network import p_input


def test_sketched_p_input_equals_the_sketch_of_the_standardized_input() -> None:
    torch.manual_seed(0)
    net = LearnedScattering(10, 1, 8, widths=[8, 16])
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        net.train()
        net(x + 0.5)  # running statistics away from (0, 1)
        net.eval()
        block = net.blocks[1]
        assert block.standardization.running_mean.abs().max() > 1e-2
        u = p_input(block, net.blocks[0](x)).flatten(1)  # the standardized input of P_2
    specs = ["blocks.1.proj:in"]
    sketched = None
    for max_dim in (64, 10**6):  # sketched (D > 64) and kept whole
        cap = LayerCapture(net, specs, max_dim=max_dim, seed=0)
        with torch.no_grad(), cap.attached(net):
            net(x)
        got = cap.features["blocks.1.proj:in"]
        sk = cap.sketches["blocks.1.proj:in"]
        assert (sk is not None) == (max_dim == 64)
        want = sk(u) if sk is not None else u
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()
        if sk is not None:
            sketched = (sk, got)
    # the fold is not a no-op: the raw (unstandardized) input sketches to something else
    sk, got = sketched
    with torch.no_grad():
        raw = block.rho(net.blocks[0](x)).flatten(1)
    assert not torch.allclose(got, sk(raw), rtol=1e-2, atol=1e-2)
