"""Rainbow resampling of learned scattering networks with real P_j (blocks W rho Std P N).

Which representation is aligned. The learned layer of block j is the 1x1 matrix P_j; its
input is u_j = Std_j(rho(W x_{j-1})), with D_j real features (split layout: a complex
coefficient counts as two real features). Channels of x_{j-1} (the output of P_{j-1} after N)
cannot be aligned directly: a rotation of them does not commute with the fixed wavelet W
followed by the modulus rho, so the next block would not see a rotated input. As in the
reference code (alignment "at the input of layer j+1", weights moved by W A on their C_in
axis, C_j of size D_j x D_j, e.g. 320 for P_2 of a 64-128-... net without skip), the
alignment A_{j-1} acts on u_j, the input of P_j, after W, rho and the (re-estimated)
standardization: A_{j-1} u_j^new ~ u_j^ref, and P_j^new = P_j^ref A_{j-1}, so that
P_j^new u_j^new ~ P_j^ref u_j^ref. The covariance C_j lives in that same space. For the first
block u_1 is a fixed function of the image, identical in both networks: A_0 = I. The
classifier (non-affine BatchNorm + linear) is aligned on the channels of its input, space
positions as samples; its linear weight (K, C h w) is transported on the C axis.

Every function takes the data as a list of (x, y) batches already normalized and on the
network's device (`batches`); activations of both networks are advanced block by block.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.models.scattering import LearnedScattering
from scatterlab.rainbow.stats import Alignment, MomentAccumulator, align, standardized_alignment
from scatterlab.rainbow.weights import (
    clip_to_top_k,
    mean_network_alignments,
    random_orthogonal,
    sample_rows,
    weight_covariance,
)

Batches = list[tuple[Tensor, Tensor]]
METHODS = ("gaussian", "transport", "rotation")


def check_network(net: nn.Module) -> LearnedScattering:
    """The network must be a LearnedScattering with real P_j (the rainbow paper's Pr)."""
    if not isinstance(net, LearnedScattering):
        raise ConfigError(
            f"rainbow resampling needs a scatterlab LearnedScattering model, got "
            f"{type(net).__name__}: use model=scattering"
        )
    if any(b.proj.complex for b in net.blocks):
        raise ConfigError(
            "rainbow resampling needs real projections P_j: set model.complex_projection=false"
        )
    return net


def layer_names(net: LearnedScattering) -> list[str]:
    """Names of the resamplable layers: blocks.{j}.proj."""
    return [f"blocks.{j}.proj" for j in range(len(net.blocks))]


def parse_layers(net: LearnedScattering, layers: Sequence[int | str] | str | None) -> list[int]:
    """Block indices from indices, names (blocks.{j}.proj), 'all' or 'all_but_last' (None).

    'all_but_last' (the default) is the reference's CIFAR protocol: P_1..P_{J-1} resampled,
    P_J and the classifier transported (or retrained).
    """
    n = len(net.blocks)
    if layers is None or layers == "all_but_last":
        return list(range(n - 1))
    if layers == "all":
        return list(range(n))
    if isinstance(layers, str | int):
        layers = [layers]
    names = layer_names(net)
    out = []
    for layer in layers:
        if isinstance(layer, str) and layer in names:
            out.append(names.index(layer))
        elif isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < n:
            out.append(layer)
        else:
            raise ConfigError(
                f"module.layers has {layer!r}, which is no layer of this network: use indices "
                f"0..{n - 1}, names {names[0]}..{names[-1]}, 'all' or 'all_but_last'"
            )
    return sorted(set(out))


def p_input(block: nn.Module, x: Tensor) -> Tensor:
    """u = Std(rho(W x)), the input of P: (B, D, H', W')."""
    return block.standardization(block.rho(x))


@torch.no_grad()
def evaluate(net: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy (in [0, 1]) of net in eval mode."""
    net.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((net(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def layer_covariances(
    nets: Sequence[LearnedScattering], layers: Sequence[int], batches: Batches, num_iters: int = 2
) -> dict[int, Tensor]:
    """C_j (D_j, D_j) in the P_j-input space of nets[0], for j in layers.

    One network: C_j = P_j^T P_j / N. Several: at each layer every network is aligned to the
    iterative mean network (pairwise moments of their P_j inputs), its rows are moved to the
    mean space (P_m A_m^T), C is formed from all rows, then brought to nets[0]'s space:
    C_ref = A_0^T C A_0.
    """
    if len(nets) == 1:
        return {j: weight_covariance(nets[0].blocks[j].proj.weight) for j in layers}
    for net in nets:
        net.eval()
    covs: dict[int, Tensor] = {}
    xs = [[x for x, _ in batches] for _ in nets]
    m = len(nets)
    for j in range(max(layers) + 1):
        blocks = [net.blocks[j] for net in nets]
        if j in layers:
            d = blocks[0].proj.weight.shape[1]
            accs = [
                [MomentAccumulator(d, d, device=batches[0][0].device) for _ in nets] for _ in nets
            ]
            for b in range(len(batches)):
                us = [p_input(blk, x[b]) for blk, x in zip(blocks, xs, strict=True)]
                for a in range(m):
                    for c in range(m):
                        accs[a][c].update(us[a], us[c])
            pairwise = torch.stack(
                [torch.stack([accs[a][c].cross for c in range(m)]) for a in range(m)]
            )
            aligns = mean_network_alignments(pairwise.cpu(), num_iters)
            rows = [
                blk.proj.weight.detach().double().cpu() @ al.T
                for blk, al in zip(blocks, aligns, strict=True)
            ]
            c_mean = weight_covariance(rows)
            covs[j] = aligns[0].T @ c_mean @ aligns[0]
        xs = [[blk(x) for x in xb] for blk, xb in zip(blocks, xs, strict=True)]
    return covs


@dataclass
class ResampleReport:
    """Per aligned representation (input of P_1..P_{J-1}..., then the classifier input)."""

    names: list[str] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    r2: list[float] = field(default_factory=list)


def _stats_alignment(
    ref_u: list[Tensor], new_raw: list[Tensor], pool, eps: float
) -> tuple[Alignment, Tensor, Tensor]:
    acc = MomentAccumulator(ref_u[0].shape[1], new_raw[0].shape[1], device=ref_u[0].device)
    for u, v in zip(ref_u, new_raw, strict=True):
        acc.update(u, v)
    return standardized_alignment(acc, pool, eps)


@torch.no_grad()
def block_input_alignment(
    ref: LearnedScattering,
    new: LearnedScattering,
    j: int,
    batches: Batches,
    reestimate: bool = True,
) -> Alignment:
    """Alignment A (D_j, D_j) of new's P_j input onto ref's: A u_j^new ~ u_j^ref.

    With `reestimate`, new's Std_j statistics are first set to the exact ones of its data.
    """
    ref.eval()
    new.eval()
    xr, xn = [x for x, _ in batches], [x for x, _ in batches]
    for i in range(j):
        xr = [ref.blocks[i](x) for x in xr]
        xn = [new.blocks[i](x) for x in xn]
    rb, nb = ref.blocks[j], new.blocks[j]
    u_ref = [p_input(rb, x) for x in xr]
    if not reestimate:
        acc = MomentAccumulator(u_ref[0].shape[1], u_ref[0].shape[1], device=u_ref[0].device)
        for u, x in zip(u_ref, xn, strict=True):
            acc.update(u, p_input(nb, x))
        return align(acc.cross, float(acc.power_x.sum()), float(acc.power_y.sum()))
    std = nb.standardization
    al, mu, var = _stats_alignment(u_ref, [nb.rho(x) for x in xn], std._pool_complex, std.eps)
    std.running_mean.copy_(mu.to(std.running_mean.dtype))
    std.running_var.copy_(var.to(std.running_var.dtype))
    return al


@torch.no_grad()
def resample(
    ref: LearnedScattering,
    covariances: dict[int, Tensor],
    batches: Batches,
    method: str = "gaussian",
    generator: torch.Generator | None = None,
) -> tuple[LearnedScattering, ResampleReport]:
    """A rainbow network: P_j ~ N(0, C_j) transported by the current alignment, j in covariances.

    Blocks are processed in order. Before P_j is set, the new network's Std_j statistics are
    re-estimated on `batches` (exact mean and variance of its own rho(W x)) and the alignment
    A_{j-1} of its P_j input onto the reference's is computed (A_0 = I). P_j is drawn from
    N(0, C_j) in reference space when j is resampled, else the trained P_j is used, and moved
    to the new space: P_j^new = P_j A_{j-1}. At the end the classifier's BatchNorm statistics
    are re-estimated and its linear layer transported by the last alignment.
    method: 'gaussian' (the rainbow), 'transport' (no resampling: trained weights moved, a
    sanity check that gives back the trained accuracy), 'rotation' (control: A replaced by a
    random rotation, so the sampled weights do not match the reference's features).
    """
    if method not in METHODS:
        raise ConfigError(f"module.method={method!r} is unknown: use one of {', '.join(METHODS)}")
    ref.eval()
    new = copy.deepcopy(ref).eval()
    report = ResampleReport()
    xs_ref = [x for x, _ in batches]
    xs_new = list(xs_ref)
    for j, (rb, nb) in enumerate(zip(ref.blocks, new.blocks, strict=True)):
        w = rb.proj.weight.detach().double()
        if j in covariances and method != "transport":
            w = sample_rows(covariances[j].cpu(), w.shape[0], generator).to(w.device)
        if j > 0:
            u_ref = [p_input(rb, x) for x in xs_ref]
            raw = [nb.rho(x) for x in xs_new]
            std = nb.standardization
            al, mu, var = _stats_alignment(u_ref, raw, std._pool_complex, std.eps)
            std.running_mean.copy_(mu.to(std.running_mean.dtype))
            std.running_var.copy_(var.to(std.running_var.dtype))
            report.names.append(f"blocks.{j}.proj")
            report.errors.append(al.error)
            report.r2.append(al.r2)
            a = al.matrix.to(w.device, torch.float64)
            if method == "rotation":
                a = random_orthogonal(a.shape[0], generator).to(w.device)
            w = w @ a
        nb.proj.weight.copy_(w.to(nb.proj.weight.dtype))
        xs_ref = [rb(x) for x in xs_ref]
        xs_new = [nb(x) for x in xs_new]
    _transport_classifier(ref, new, xs_ref, xs_new, report, method, generator)
    return new, report


def _transport_classifier(ref, new, xs_ref, xs_new, report, method, generator) -> None:
    norm_ref, norm_new = ref.classifier.norm, new.classifier.norm
    u_ref = [norm_ref(x) for x in xs_ref]
    al, mu, var = _stats_alignment(u_ref, xs_new, None, norm_new.eps)
    norm_new.running_mean.copy_(mu.to(norm_new.running_mean.dtype))
    norm_new.running_var.copy_(var.to(norm_new.running_var.dtype))
    report.names.append("classifier")
    report.errors.append(al.error)
    report.r2.append(al.r2)
    a = al.matrix.double()
    if method == "rotation":
        a = random_orthogonal(a.shape[0], generator)
    lin = ref.classifier.linear.weight.detach().double()
    c = a.shape[0]
    w = lin.reshape(lin.shape[0], c, -1)  # (K, C, h w): flatten order of (C, h, w)
    w = torch.einsum("kcs,cd->kds", w, a.to(w.device))
    new.classifier.linear.weight.copy_(w.reshape(lin.shape).to(lin.dtype))


def _width_pairs(ref: LearnedScattering, net: LearnedScattering, x: Tensor):
    """(name, ref's representation, net's) of one batch at the layers the width alignment
    compares: the input u_j of P_j for j >= 1, then the classifier's (normalized) input."""
    if len(ref.blocks) != len(net.blocks):
        raise ConfigError(
            f"the networks have {len(ref.blocks)} and {len(net.blocks)} blocks: width "
            "alignment compares networks of the same depth and different widths"
        )
    ref.eval()
    net.eval()
    xr, xn = x, x
    for j, (rb, nb) in enumerate(zip(ref.blocks, net.blocks, strict=True)):
        if j > 0:
            yield f"blocks.{j}.proj", p_input(rb, xr), p_input(nb, xn)
        xr, xn = rb(xr), nb(xn)
    yield "classifier", ref.classifier.norm(xr), net.classifier.norm(xn)


@torch.no_grad()
def width_cka(
    ref: LearnedScattering, net: LearnedScattering, batches: Batches, images: int = 256
) -> dict[str, float]:
    """Linear CKA (Kornblith et al. 2019) of the same representations as `width_alignment`.

    On the first `images` images of `batches`; each image is one sample, its representation
    (D, H, W) flattened (so a rotation of the channels, shared by all positions, is an
    orthogonal map of the flattened vector and leaves CKA at 1). Centred, invariant to
    isotropic scaling; the alignment error is neither (uncentred moments, positions as
    samples). Keyed by layer name; O(images^2) memory per layer.
    """
    from scatterlab.analysis.cka import linear_cka

    if images < 2:
        raise ConfigError(f"module.cka_images={images}: CKA needs at least 2 images")
    feats: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
    n = 0
    for x, _ in batches:
        if n >= images:
            break
        x = x[: images - n]
        n += len(x)
        for name, phi, psi in _width_pairs(ref, net, x):
            a, b = feats.setdefault(name, ([], []))
            a.append(phi.flatten(1).double().cpu())
            b.append(psi.flatten(1).double().cpu())
    return {name: linear_cka(torch.cat(a), torch.cat(b)) for name, (a, b) in feats.items()}


@torch.no_grad()
def width_alignment(
    ref: LearnedScattering, net: LearnedScattering, batches: Batches
) -> dict[str, Alignment]:
    """Alignment of a trained network's representations onto a wider trained reference's.

    The paper's convergence-with-width measure: for the input u_j of each P_j (j >= 1; u_1 is
    the same fixed function of the image in both) and the classifier's input, the Procrustes
    alignment A (D_ref, D_net) of net's representation onto ref's, each divided by the square
    root of its number of features so that widths compare: `error` is
    E|A psi / sqrt(D_net) - phi / sqrt(D_ref)|^2 / E|phi / sqrt(D_ref)|^2, exact when
    D_net <= D_ref (ref at least as wide; otherwise a bound). Both networks in eval mode with
    their own trained statistics; one streaming pass over `batches`. Keyed by layer name.
    """
    accs: dict[str, MomentAccumulator] = {}
    for x, _ in batches:
        for name, phi, psi in _width_pairs(ref, net, x):
            if name not in accs:
                accs[name] = MomentAccumulator(phi.shape[1], psi.shape[1], device=phi.device)
            accs[name].update(phi, psi)
    out = {}
    for name, acc in accs.items():
        d_ref, d_net = acc.dim_x, acc.dim_y
        out[name] = align(
            acc.cross / (d_ref * d_net) ** 0.5,
            float(acc.power_x.sum()) / d_ref,
            float(acc.power_y.sum()) / d_net,
        )
    return out


@torch.no_grad()
def reestimate_statistics(net: LearnedScattering, batches: Batches, start: int = 0) -> None:
    """Exact Std / BatchNorm statistics of blocks >= start and of the classifier, in order."""
    net.eval()
    xs = [x for x, _ in batches]
    for j, block in enumerate(net.blocks):
        if j >= start:
            std = block.standardization
            acc = MomentAccumulator(std.running_mean.numel(), device=xs[0].device)
            for x in xs:
                acc.update(block.rho(x))
            var = std._pool_complex((acc.power_x - acc.mean_x**2).clamp_min(0))
            std.running_mean.copy_(acc.mean_x.to(std.running_mean.dtype))
            std.running_var.copy_(var.to(std.running_var.dtype))
        xs = [block(x) for x in xs]
    norm = net.classifier.norm
    acc = MomentAccumulator(norm.running_mean.numel(), device=xs[0].device)
    for x in xs:
        acc.update(x)
    norm.running_mean.copy_(acc.mean_x.to(norm.running_mean.dtype))
    norm.running_var.copy_((acc.power_x - acc.mean_x**2).clamp_min(0).to(norm.running_var.dtype))


@torch.no_grad()
def clip_layer(
    net: LearnedScattering, layer: int, cov: Tensor, k: int, batches: Batches
) -> LearnedScattering:
    """A copy with P_layer projected on the top-k eigenvectors of C and statistics re-estimated."""
    out = copy.deepcopy(net).eval()
    proj = out.blocks[layer].proj
    proj.weight.copy_(clip_to_top_k(proj.weight.detach(), cov.to(proj.weight.device), k))
    reestimate_statistics(out, batches, start=layer + 1)
    return out


def retrain_head(
    net: LearnedScattering,
    batches: Batches,
    epochs: int = 5,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    generator: torch.Generator | None = None,
) -> LearnedScattering:
    """'Rainbow + trained classifier': retrain the last P_J and the classifier's linear layer.

    As the reference's `--freeze-P 1x(J-1)`: P_1..P_{J-1} frozen, all statistics frozen (eval
    mode), SGD with momentum 0.9 and a cosine schedule over `epochs` passes of `batches`.
    """
    net = copy.deepcopy(net).eval()
    params = [net.blocks[-1].proj.weight, net.classifier.linear.weight]
    if net.classifier.linear.bias is not None:
        params.append(net.classifier.linear.bias)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = max(epochs * len(batches), 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(batches), generator=generator)
            for i in order.tolist():
                x, y = batches[i]
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def permute_channels(
    net: LearnedScattering, block: int, generator: torch.Generator | None = None
) -> LearnedScattering:
    """A copy whose P_block output channels are permuted (the function changes: the next
    block's P sees its input features in another order). Used by the tests."""
    out = copy.deepcopy(net)
    w = out.blocks[block].proj.weight
    perm = torch.randperm(w.shape[0], generator=generator)
    with torch.no_grad():
        w.copy_(w[perm])
    return out
