"""Which layers to look at, and forward hooks that capture their features batch by batch.

A layer is named by its module path in `net.named_modules()`, optionally with `:in` (the
module's input) or `:out` (its output, the default). Names ending in `.proj` default to the
input: the input of P_j in a learned scattering block is the representation P_j acts on.
Defaults, by architecture (`default_layers`):
- a net with an `analysis_layers()` method: what it returns (new models plug in this way);
- `blocks.<i>` (LearnedScattering): `blocks.<i>.proj:in` (rho's output, standardized, the
  input of P_j) and `blocks.<i>` (the block's output), for every block;
- `layers.<i>` (scatterlab.models.MLP): every hidden layer (output after the activation);
- `layer1..layer4` (torchvision ResNet-18): its four stages.
The classifier's input (for neural collapse) is the input of the net's last `nn.Linear`.

Memory: a layer wider than `max_dim` is mapped to `max_dim` dimensions by a count sketch
(feature hashing: each input coordinate is added, with a random sign, to one of `max_dim`
buckets; a fixed seed per layer name). It preserves inner products in expectation
(E <S a, S b> = <a, b>), so traces of covariances, distances and linear CKA are kept up to
O(1/sqrt(max_dim)) relative noise, and it needs O(D) memory, not O(D * max_dim).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError


def default_layers(net: nn.Module) -> list[str]:
    """The layers analysed when none are configured (see the module docstring)."""
    if hasattr(net, "analysis_layers"):
        return list(net.analysis_layers())
    modules = dict(net.named_modules())
    for prefix in ("blocks", "layers"):
        seq = modules.get(prefix)
        if isinstance(seq, nn.ModuleList | nn.Sequential):
            names = []
            for i in range(len(seq)):
                if prefix == "blocks" and f"blocks.{i}.proj" in modules:
                    names.append(f"blocks.{i}.proj:in")
                names.append(f"{prefix}.{i}")
            return names
    stages = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in modules]
    if stages:
        return stages
    raise ConfigError(
        f"no default analysis layers for {type(net).__name__}: set callbacks.analysis.layers "
        "to module names (e.g. features.3, or features.3:in for its input)"
    )


def classifier_name(net: nn.Module) -> str | None:
    """Module name of the net's last nn.Linear (the classifier), or None."""
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    return last


def parse(spec: str) -> tuple[str, str]:
    """'name', 'name:in' or 'name:out' -> (module name, 'in' | 'out')."""
    name, _, where = spec.partition(":")
    if not where:
        where = "in" if name.endswith(".proj") or name == "proj" else "out"
    if where not in ("in", "out"):
        raise ConfigError(f"analysis layer {spec!r}: the suffix must be :in or :out")
    return name, where


def resolve(net: nn.Module, specs: list[str]) -> dict[str, tuple[nn.Module, str]]:
    """Layer spec -> (module, 'in' | 'out'); an unknown name raises ConfigError."""
    modules = dict(net.named_modules())
    out = {}
    for spec in specs:
        name, where = parse(spec)
        if name not in modules or name == "":
            import difflib

            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see net.named_modules()"
            raise ConfigError(
                f"analysis layer {spec!r} is not a module of {type(net).__name__} ({hint}); "
                f"its defaults are {', '.join(_safe_defaults(net))}"
            )
        out[spec] = (modules[name], where)
    return out


def _safe_defaults(net: nn.Module) -> list[str]:
    try:
        return default_layers(net)
    except ConfigError:
        return ["(none)"]


class CountSketch:
    """Feature hashing D -> k: S x with S[b(i), i] = s(i), b uniform in [0, k), s = +-1."""

    def __init__(self, dim: int, k: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.dim, self.k = dim, k
        self.bucket = torch.randint(0, k, (dim,), generator=g)
        self.sign = torch.randint(0, 2, (dim,), generator=g).float() * 2 - 1

    def __call__(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """x (B, D) -> (B, k), on x's device; S (weight * x) with a per-feature `weight` (D,)."""
        b, s = self.bucket.to(x.device), self.sign.to(x.device, x.dtype)
        if weight is not None:
            s = s * weight.to(x.device, x.dtype)
        out = torch.zeros(x.shape[0], self.k, device=x.device, dtype=x.dtype)
        return out.index_add_(1, b, x * s)


class LayerCapture:
    """Forward hooks on the named layers; after each forward `features[spec]` is (B, d) float
    (flattened, sketched to at most `max_dim` dims), detached.

    Use as a context manager (`with capture.attached(net): net(x)`); hooks are removed on exit.
    """

    def __init__(self, net: nn.Module, specs: list[str], max_dim: int = 512, seed: int = 0) -> None:
        self.layers = resolve(net, specs)
        self.max_dim, self.seed = max_dim, seed
        self.sketches: dict[str, CountSketch | None] = {}
        self.dims: dict[str, int] = {}
        self.features: dict[str, Tensor] = {}

    def _store(
        self, spec: str, x: Tensor, mean: Tensor | None = None, scale: Tensor | None = None
    ) -> None:
        """Store the flattened (sketched) features of x, or of (x - mean) * scale (per channel
        of x (B, C, H, W)) when mean and scale are given."""
        x = x.detach()
        if spec not in self.sketches:
            D = x[0].numel()
            self.dims[spec] = D
            sk_seed = self.seed * 1_000_003 + zlib.crc32(spec.encode())
            self.sketches[spec] = (
                CountSketch(D, self.max_dim, sk_seed) if self.max_dim < D else None
            )
        sk = self.sketches[spec]
        if mean is not None and sk is not None:
            # The sketch is linear: S((x - m) * s) = S(s * x) - S(s * m), with the channel
            # scale folded into the sketch's signs; no standardized copy of x is made.
            per = x[0].numel() // x.shape[1]
            w = scale.detach().float().repeat_interleave(per)
            shift = sk((mean.detach().float().repeat_interleave(per) * w)[None])
            self.features[spec] = sk(x.flatten(1).float(), w) - shift
            return
        if mean is not None:
            x = (x - mean.view(1, -1, 1, 1).to(x.dtype)) * scale.view(1, -1, 1, 1).to(x.dtype)
        x = x.flatten(1).float()
        self.features[spec] = sk(x) if sk is not None else x

    def project(self, spec: str, rows: Tensor) -> Tensor:
        """Rows (R, D) in the layer's original coordinates -> the captured coordinates."""
        sk = self.sketches.get(spec)
        return sk(rows.float()) if sk is not None else rows

    @contextmanager
    def attached(self, net: nn.Module) -> Iterator[LayerCapture]:
        handles = []
        for spec, (mod, where) in self.layers.items():
            if where == "in":
                handles.append(mod.register_forward_pre_hook(self._pre_hook(spec)))
            else:
                handles.append(mod.register_forward_hook(self._post_hook(spec)))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _pre_hook(self, spec: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            # LearnedScattering folds its standardization into P: P(x, mean, scale). The input
            # P acts on is the standardized (x - mean) * scale.
            if len(args) >= 3 and all(isinstance(a, Tensor) for a in args[1:3]) and x.ndim == 4:
                mean, scale = args[1], args[2]
                if mean.numel() == scale.numel() == x.shape[1]:
                    self._store(spec, x, mean, scale)
                    return
            self._store(spec, x)

        return hook

    def _post_hook(self, spec: str):
        def hook(module: nn.Module, args: tuple, output) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            self._store(spec, out)

        return hook
