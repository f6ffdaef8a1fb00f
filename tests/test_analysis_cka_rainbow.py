"""CKA beside the rainbow alignment error of the same layers (module.reference_ckpt)."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from scatterlab.analysis.cka import linear_cka
from scatterlab.rainbow import (
    MomentAccumulator,
    align,
    random_orthogonal,
    reestimate_statistics,
    width_alignment,
    width_cka,
)
from scatterlab.rainbow.network import p_input
from tests.test_rainbow import _digits, _narrow_net, _net, _reference_ckpt, _trained_net

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def trained(digits):
    return _trained_net(digits[0], epochs=2)


def _signed_permutation_copy(net, train, seed=3):
    """P_1's output channels permuted and some sign-flipped: u_2 (the input of P_2) becomes
    an orthogonal (signed-permutation) transform of net's, the only channel rotations this
    architecture leaves exact (the modulus and the pixel normalization keep them)."""
    g = torch.Generator().manual_seed(seed)
    new = copy.deepcopy(net)
    w = new.blocks[0].proj.weight
    c = w.shape[0]
    signs = torch.where(torch.rand(c, generator=g) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        w.copy_(w[torch.randperm(c, generator=g)] * signs[:, None])
    reestimate_statistics(new, train, start=1)
    return new.eval()


def test_cka_of_a_network_with_itself_is_one_and_less_for_another(trained, digits) -> None:
    train, test = digits
    same = width_cka(trained, trained, test, images=200)
    assert list(same) == ["blocks.1.proj", "blocks.2.proj", "classifier"]
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in same.values())
    assert all(al.error < 1e-6 for al in width_alignment(trained, trained, test).values())
    other = _net(widths=(8, 16, 16), seed=5)  # untrained, narrower
    reestimate_statistics(other, train)
    cka = width_cka(trained, other, test, images=200)
    assert all(0 < v < 0.99 for v in cka.values()), cka


def test_a_rotated_copy_has_zero_alignment_error_and_cka_one(trained, digits) -> None:
    """A signed permutation of P_1's rows: the input of P_2 is an orthogonal transform of the
    reference's, so both measures see the same representation there (error ~0, CKA 1); deeper
    layers see a changed function (P_2 not moved) and both measures see it. Moving P_2 by the
    alignment (P_2 A) makes the whole network a rotated copy: ~0 and 1 at every layer."""
    train, test = digits
    new = _signed_permutation_copy(trained, train)
    err = {k: al.error for k, al in width_alignment(trained, new, test).items()}
    cka = width_cka(trained, new, test)
    assert err["blocks.1.proj"] < 1e-6 and cka["blocks.1.proj"] == pytest.approx(1, abs=1e-9)
    assert err["blocks.2.proj"] > 1e-2 and cka["blocks.2.proj"] < 0.999
    # transport P_2 by the alignment of the P_2 inputs: the function is restored
    a = width_alignment(trained, new, test)["blocks.1.proj"].matrix  # A psi ~ phi
    with torch.no_grad():
        w = trained.blocks[1].proj.weight.double() @ a.to(torch.float64)
        new.blocks[1].proj.weight.copy_(w.float())
    reestimate_statistics(new, train, start=2)
    err = {k: al.error for k, al in width_alignment(trained, new, test).items()}
    cka = width_cka(trained, new, test)
    assert all(e < 1e-5 for e in err.values()), err
    assert all(v == pytest.approx(1, abs=1e-6) for v in cka.values()), cka


def test_cka_and_alignment_on_rotated_and_rescaled_features(trained, digits) -> None:
    """The representation u_2 of a trained net, rotated by a dense random rotation of its
    channels (shared by all positions): alignment error ~0 and CKA 1. Times 3: CKA stays 1,
    the alignment error becomes (9 + 1 - 6) = 4 (it is not scale invariant). Anisotropic
    channel scales (0.2..3): CKA < 1 and error > 0 (neither is invariant to general linear
    maps), but by very different amounts."""
    _, test = digits
    x = torch.cat([b[0] for b in test])[:200]
    with torch.no_grad():
        phi = p_input(trained.blocks[1], trained.blocks[0](x)).double()
    d = phi.shape[1]
    q = random_orthogonal(d, torch.Generator().manual_seed(0)).double()
    scales = torch.linspace(0.2, 3.0, d, dtype=torch.float64)

    def both(psi):
        acc = MomentAccumulator(d, d, compute_dtype=torch.float64)
        acc.update(phi, psi)
        al = align(acc.cross, float(acc.power_x.sum()), float(acc.power_y.sum()))
        return al.error, linear_cka(phi, psi)

    rot = torch.einsum("ed,bdhw->behw", q, phi)
    err, cka = both(rot)
    assert err < 1e-9 and cka == pytest.approx(1, abs=1e-9)
    err, cka = both(3 * rot)
    assert err == pytest.approx(4.0, rel=1e-6) and cka == pytest.approx(1, abs=1e-9)
    # CKA moves little (0.994 here: it is dominated by the leading principal directions, which
    # Std leaves balanced), the alignment error a lot (0.59): the two disagree on this map
    err, cka = both(torch.einsum("ed,bdhw->behw", q * scales, phi))
    assert err > 0.3 and cka < 0.999


def test_module_logs_cka_beside_the_alignment_error(trained, digits, tmp_path) -> None:
    from scatterlab.errors import ConfigError
    from scatterlab.modules.rainbow import RainbowModule

    path = _reference_ckpt(trained, tmp_path)
    narrow = _narrow_net(digits)
    opt = partial(torch.optim.SGD, lr=0.1)
    module = RainbowModule(narrow, opt, rainbow=False, reference_ckpt=str(path), cka_images=100)
    got = module.run_width_alignment(digits[1])
    names = ["blocks.1.proj", "blocks.2.proj", "classifier"]
    assert {f"cka/{n}" for n in names} <= set(got)
    want = width_cka(trained, narrow, digits[1], images=100)
    for n in names:
        assert got[f"cka/{n}"] == pytest.approx(want[n], rel=1e-9)
    off = RainbowModule(narrow, opt, rainbow=False, reference_ckpt=str(path), cka_images=0)
    assert not [k for k in off.run_width_alignment(digits[1]) if k.startswith("cka/")]
    with pytest.raises(ConfigError, match="cka_images"):
        RainbowModule(narrow, opt, rainbow=False, cka_images=1)
