"""Wavelet phase harmonic (WPH) moments of 2D periodic fields, batched, plain torch.

For a field x (M x N, periodic) and the bump-steerable wavelets psi_{j,t} (j < J scales,
t < L orientations, ``filters.py``), z_{j,t} = x * psi_{j,t} (circular convolution) and the
phase harmonics are [z]^k = |z| e^{i k arg z}: k = 0 is the modulus, k = 1 leaves z unchanged.
The moments are spatial means over u (periodic lags tau) of products of centred, normalised
maps a = ([z_l]^k - m) / s and b = ([z_l']^k' - m') / s':

    C(a, b, tau) = mean_u a(u + tau) conj(b(u))

grouped in the classes of PyWPH's default model (Allys et al. 2020), plus first moments:

====== ============================================== ==========================================
class  maps (a, b)                                    lags tau
====== ============================================== ==========================================
M      first moments: mean |z_{j,t}|, mean x,         --
       mean |x * phi_j|
S11    (z_{j,t}, z_{j,t}): band power                 0 and round(2^n (cos, sin)(theta - a pi/A))
S00    (|z_{j,t}|, |z_{j,t}|): sparsity               n = 1..dn, a < A
S01    (|z_{j,t}|, z_{j,t})                           0
C01    (|z_{j1,t1}|, z_{j2,t2}), j1 < j2, all t1, t2  0; if t1 = t2 also n = 1..dn, a < 2A
Cphase (z_{j1,t}, [z_{j2,t}]^{2^{j2-j1}}), j1 < j2    0 and n = 1..min(J-1-j2, dn), a < 2A
L      (y_j)^{p1}, (y_j)^{p2} with y_j = x*phi_j      0
       centred, (p1, p2) in (0,0), (0,1), (1,1)
       (^0: modulus)
====== ============================================== ==========================================

Low-pass centring (``lowpass_centering``): ``"pywph"`` (default, PyWPH 1.1.3's model) centres
y_j = x * phi_j on its own spatial mean before the modulus, so the L class sees |y_j - <y_j>|
and does not depend on the field's mean; ``"modulus"`` (the project's model before issue 25)
takes |y_j| and centres it afterwards, so a field's mean enters the (0, 0) and (0, 1) moments
(76% apart from PyWPH on exp of a Gaussian field). The M class keeps mean |x * phi_j| either way.

Normalisation: ``fit_normalization(reference)`` stores, for every map, the mean m and RMS s over
the reference fields and pixels (PyWPH's ``norm="auto"``); later moments of any field use those
m and s, so a mean mismatch shows up in the covariances and the M class is
(mean(map) - m) / s. Before fitting (or with ``normalized=False``) each map has its own spatial
mean subtracted and s = 1 (PyWPH's ``norm=None``), and the M class holds the plain means.

Costs are linear in the number of moments: the maps (J L of them, plus J (J-1) L / 2 harmonic
maps) are computed once per field; each tau = 0 moment is one mean of a product (C01 as one
matrix product), each lagged one a gather from an FFT cross-correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.ranges import NonNegativeInt, PositiveInt, Range
from scatterlab.wph.filters import bump_steerable_hat, gaussian_lowpass_hat

CLASSES = ("M", "S11", "S00", "S01", "C01", "Cphase", "L")
# index columns of ``WPHOp.indices``
INDEX_COLUMNS = ("class", "j1", "t1", "k1", "j2", "t2", "k2", "n", "a")


def check_fields(x: Tensor, size: tuple[int, int] | None = None, J: int | None = None) -> None:
    """Raise a one-line ConfigError for a NaN/inf field, a field smaller than 2^J or of another
    size than the operator's. x: (..., M, N)."""
    if x.dim() < 2:
        raise ConfigError(f"WPH fields are (..., M, N) tensors, got shape {tuple(x.shape)}")
    m, n = x.shape[-2:]
    if J is not None and min(m, n) < 2**J:
        raise ConfigError(
            f"field of {m}x{n} pixels is smaller than 2^J = {2**J}: lower J to at most "
            f"{int(math.log2(min(m, n)))} or use larger fields"
        )
    if size is not None and (m, n) != tuple(size):
        raise ConfigError(
            f"field of {m}x{n} pixels given to a WPH operator built for {size[0]}x{size[1]}: "
            "build the operator with the fields' size"
        )
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("the field contains NaN or inf values: clean or drop those fields")


def require_square(x: Tensor, what: str = "this") -> None:
    """One-line ConfigError for non-square fields (radial spectra and rotations need squares)."""
    if x.shape[-1] != x.shape[-2]:
        raise ConfigError(
            f"{what} needs square fields, got {x.shape[-2]}x{x.shape[-1]}: crop them to squares"
        )


def _lag_positions(L: int, n_list: Sequence[int], n_dirs: int, A: int, m: int, n: int) -> Tensor:
    """Flat indices (dy mod M) N + (dx mod N) of the lags of each orientation: (L, n_lags).

    Lag (n, a): 0 for n = 0, else round(2^n (cos, sin)(theta_t - a pi / A)) in (x, y); they
    turn with theta, so a rotation by 90 degrees maps the lag set of t onto that of t + L/2.
    """
    pos = torch.zeros(L, sum(1 if k == 0 else n_dirs for k in n_list), dtype=torch.long)
    for t in range(L):
        theta, c = t * math.pi / L, 0
        for k in n_list:
            for a in range(1 if k == 0 else n_dirs):
                ang = theta - a * math.pi / A
                dx = 0 if k == 0 else round(2**k * math.cos(ang))
                dy = 0 if k == 0 else round(2**k * math.sin(ang))
                pos[t, c] = (dy % m) * n + (dx % n)
                c += 1
    return pos


def _corr(a_hat: Tensor, b_hat: Tensor, pos: Tensor, npix: int) -> Tensor:
    """mean_u a(u + tau) conj(b(u)) at the lags ``pos`` (L, n_lags) from Fourier transforms
    a_hat, b_hat (..., L, M, N) -> (..., L, n_lags), complex."""
    c = torch.fft.ifft2(a_hat * b_hat.conj()).flatten(-2) / npix
    t = torch.arange(pos.shape[0], device=pos.device)[:, None].expand_as(pos)
    return c[..., t, pos]


class WPHOp(nn.Module):
    """WPH moments of (..., M, N) real fields -> (..., K) complex; K = ``n_moments``.

    size: M or (M, N), with M, N >= 2^J. J scales (None: log2(min(M, N)) - 1), L orientations
    over [0, pi), dn lag octaves (0: tau = 0 only), A lag directions, ``lowpass_j`` the scales
    of the low-pass (L class) moments (default -1 .. J // 4, as PyWPH), ``classes`` a subset of
    ``CLASSES``, ``lowpass_centering`` how the L class centres x * phi_j (module docstring).
    ``indices`` (K, 9) names each moment: class id (position in CLASSES), j1, t1, k1, j2, t2,
    k2, n, a (t = -1 and j = low-pass scale for the low-pass moments; j = -9 for mean x).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "J is None or 2**J <= (size if size.__class__ is int else min(size))",
            "lower model.J: the fields (model.size) must be at least 2^J pixels wide",
        ),
    )

    def __init__(
        self,
        size: Annotated[int, Range(ge=2)]
        | Annotated[Sequence[Annotated[int, Range(ge=2)]], Range(ge=2, le=2)],
        J: PositiveInt | None,
        L: PositiveInt = 4,
        dn: NonNegativeInt = 0,
        A: PositiveInt = 4,
        lowpass_j: Sequence[Annotated[int, Range(ge=-1)]] | None = None,
        classes: Sequence[Literal["M", "S11", "S00", "S01", "C01", "Cphase", "L"]] = CLASSES,
        dtype: torch.dtype = torch.float32,
        lowpass_centering: Literal["pywph", "modulus"] = "pywph",
    ) -> None:
        super().__init__()
        m, n = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if J is None:  # largest wavelet scale 2^(J-1) a quarter of the field
            J = max(1, int(math.log2(min(m, n))) - 1)
        if min(m, n) < 2**J:
            raise ConfigError(
                f"fields of {m}x{n} pixels are smaller than 2^J = {2**J}: lower J to at most "
                f"{int(math.log2(min(m, n)))} or use larger fields"
            )
        unknown = [c for c in classes if c not in CLASSES]
        if unknown:
            raise ConfigError(f"unknown WPH moment classes {unknown}: use a subset of {CLASSES}")
        self.size, self.J, self.L, self.dn, self.A = (m, n), J, L, dn, A
        if lowpass_centering not in ("pywph", "modulus"):
            raise ConfigError(
                f"unknown lowpass_centering {lowpass_centering!r}: use 'pywph' (centre x * phi_j "
                "before the modulus, PyWPH's model) or 'modulus' (centre |x * phi_j|)"
            )
        self.lowpass_centering = lowpass_centering
        self.classes = tuple(c for c in CLASSES if c in classes)
        self.lowpass_j = list(range(-1, J // 4 + 1)) if lowpass_j is None else list(lowpass_j)
        self.register_buffer("psi_hat", bump_steerable_hat(m, n, J, L).to(dtype))
        self.register_buffer("phi_hat", gaussian_lowpass_hat(m, n, self.lowpass_j).to(dtype))
        self.register_buffer("pos_s", _lag_positions(L, range(dn + 1), A, A, m, n))
        self.register_buffer("pos_c", _lag_positions(L, range(1, dn + 1), 2 * A, A, m, n))
        self.pairs = [(j1, j2) for j1 in range(J) for j2 in range(j1 + 1, J)]
        self.norm: dict[str, Tensor] | None = None
        self.indices = self._index_table()

    # ---- bookkeeping -------------------------------------------------------------------
    @property
    def n_moments(self) -> int:
        return int(self.indices.shape[0])

    def class_slices(self) -> dict[str, slice]:
        """Position of each class in the moment vector."""
        out, start = {}, 0
        for i, c in enumerate(CLASSES):
            cnt = int((self.indices[:, 0] == i).sum())
            if cnt:
                out[c] = slice(start, start + cnt)
                start += cnt
        return out

    def _index_table(self) -> Tensor:
        J, L, dn, A = self.J, self.L, self.dn, self.A
        rows: list[tuple[int, ...]] = []
        cid = {c: i for i, c in enumerate(CLASSES)}
        lags_s = [(0, 0)] + [(k, a) for k in range(1, dn + 1) for a in range(A)]
        if "M" in self.classes:
            rows += [(cid["M"], j, t, 0, j, t, 0, 0, 0) for j in range(J) for t in range(L)]
            rows.append((cid["M"], -9, -1, 1, -9, -1, 1, 0, 0))
            rows += [(cid["M"], j, -1, 0, j, -1, 0, 0, 0) for j in self.lowpass_j]
        for name, k in (("S11", 1), ("S00", 0)):
            if name in self.classes:
                rows += [
                    (cid[name], j, t, k, j, t, k, nn_, a)
                    for j in range(J)
                    for t in range(L)
                    for nn_, a in lags_s
                ]
        if "S01" in self.classes:
            rows += [(cid["S01"], j, t, 0, j, t, 1, 0, 0) for j in range(J) for t in range(L)]
        if "C01" in self.classes:
            rows += [
                (cid["C01"], j1, t1, 0, j2, t2, 1, 0, 0)
                for j1, j2 in self.pairs
                for t1 in range(L)
                for t2 in range(L)
            ]
            rows += [
                (cid["C01"], j1, t, 0, j2, t, 1, k, a)
                for j1, j2 in self.pairs
                for t in range(L)
                for k in range(1, dn + 1)
                for a in range(2 * A)
            ]
        if "Cphase" in self.classes:
            for d in range(1, J):
                rows += [
                    (cid["Cphase"], j1, t, 1, j1 + d, t, 2**d, 0, 0)
                    for j1 in range(J - d)
                    for t in range(L)
                ]
            for j1, j2 in self.pairs:
                nmax = min(J - 1 - j2, dn)
                rows += [
                    (cid["Cphase"], j1, t, 1, j2, t, 2 ** (j2 - j1), k, a)
                    for t in range(L)
                    for k in range(1, nmax + 1)
                    for a in range(2 * A)
                ]
        if "L" in self.classes:
            for p1, p2 in ((0, 0), (0, 1), (1, 1)):
                rows += [(cid["L"], j, -1, p1, j, -1, p2, 0, 0) for j in self.lowpass_j]
        return torch.tensor(rows, dtype=torch.long).reshape(-1, len(INDEX_COLUMNS))

    # ---- maps --------------------------------------------------------------------------
    def _maps(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, M, N) -> wavelet maps and their Fourier transforms (B, J, L, M, N), low-pass."""
        J, L = self.J, self.L
        xh = torch.fft.fft2(x)
        zh = xh[:, None] * self.psi_hat.reshape(J * L, *self.size)
        z = torch.fft.ifft2(zh).reshape(x.shape[0], J, L, *self.size)
        y = torch.fft.ifft2(xh[:, None] * self.phi_hat).real  # (B, S, M, N)
        mp = {"x": x, "zh": zh.reshape(z.shape), "z": z, "r": z.abs(), "y": y}
        # the L class's maps: PyWPH centres y on its own spatial mean before the modulus
        if self.lowpass_centering == "pywph":
            mp["yc"] = y - y.mean(dim=(-2, -1), keepdim=True)
        else:
            mp["yc"] = y
        return mp

    @staticmethod
    def _unit(z: Tensor, r: Tensor) -> Tensor:
        # z / |z| with 0 at z = 0: finite gradients where torch.angle's are not
        return z / r.clamp_min(1e-20)

    def _harmonics(self, mp: dict[str, Tensor]):
        """Yield (d, H) with H = [z_{j2}]^{2^d} for j2 = d..J-1: (B, J-d, L, M, N)."""
        u = self._unit(mp["z"], mp["r"])
        for d in range(1, self.J):
            u = u[:, 1:] * u[:, 1:]  # repeated squaring, kept for j2 >= d only: u^{2^d}
            yield d, mp["r"][:, d:] * u

    # ---- normalisation -----------------------------------------------------------------
    @torch.no_grad()
    def fit_normalization(self, reference: Tensor, chunk: int = 16) -> None:
        """Store means and RMS of every map over the reference fields (..., M, N) and pixels."""
        ref = self._prepare(reference)
        # running sums (float64) of v and |v|^2 over fields and pixels: memory of one chunk
        s1: dict[str, Tensor] = {}
        s2: dict[str, Tensor] = {}
        for i in range(0, ref.shape[0], chunk):
            mp = self._maps(ref[i : i + chunk])
            vals = {"r": mp["r"], "z": mp["z"], "x": mp["x"][:, None]}
            vals["ya"] = mp["y"].abs()
            vals["yc"], vals["yca"] = mp["yc"], mp["yc"].abs()
            for d, h in self._harmonics(mp):
                vals[f"h{d}"] = h
            for k, v in vals.items():
                v = v.to(torch.complex128 if v.is_complex() else torch.float64)
                s1[k] = s1.get(k, 0) + v.sum(dim=(0, -2, -1))
                s2[k] = s2.get(k, 0) + v.abs().pow(2).sum(dim=(0, -2, -1))
        count = ref.shape[0] * ref.shape[-1] * ref.shape[-2]
        norm: dict[str, Tensor] = {}
        for k in s1:
            mean = s1[k] / count
            if k == "z":  # wavelet maps have zero mean exactly (psi_hat(0) = 0)
                mean = torch.zeros_like(mean)
            rms = (s2[k] / count - mean.abs().pow(2)).clamp_min(0).sqrt()
            dt = self.psi_hat.dtype
            norm[f"{k}_m"] = mean.to(torch.complex64 if dt == torch.float32 else torch.complex128)
            if not mean.is_complex():
                norm[f"{k}_m"] = mean.to(dt)
            norm[f"{k}_s"] = torch.where(rms > 0, rms, torch.ones_like(rms)).to(dt)  # as PyWPH
        self.norm = norm

    def clear_normalization(self) -> None:
        self.norm = None

    def _center(self, v: Tensor, key: str, normalized: bool) -> Tensor:
        if normalized and self.norm is not None:
            m, s = self.norm[f"{key}_m"], self.norm[f"{key}_s"]
            return (v - m[..., None, None]) / s[..., None, None]
        return v - v.mean(dim=(-2, -1), keepdim=True)

    def _first(self, v: Tensor, key: str, normalized: bool) -> Tensor:
        mean = v.mean(dim=(-2, -1))
        if normalized and self.norm is not None:
            return (mean - self.norm[f"{key}_m"]) / self.norm[f"{key}_s"]
        return mean

    # ---- moments -----------------------------------------------------------------------
    def _prepare(self, x: Tensor) -> Tensor:
        check_fields(x, self.size, self.J)
        return x.reshape(-1, *self.size).to(self.psi_hat.dtype)

    def forward(self, x: Tensor, normalized: bool = True) -> Tensor:
        """Moments of fields x (..., M, N) -> (..., K) complex (see the module docstring)."""
        lead = x.shape[:-2]
        out = self.moments(self._prepare(x), normalized)
        return out.reshape(*lead, -1)

    def moments(self, x: Tensor, normalized: bool = True) -> Tensor:
        """Moments of x (B, M, N), already checked -> (B, K) complex (no input checks)."""
        b, (m, n) = x.shape[0], self.size
        npix = m * n
        J, L = self.J, self.L
        mp = self._maps(x)
        z, zh, r = mp["z"], mp["zh"], mp["r"]
        cplx = z.dtype
        out: list[Tensor] = []
        a0 = self._center(r, "r", normalized)  # (B, J, L, M, N) real
        a1 = z / self.norm["z_s"][..., None, None] if normalized and self.norm else z
        a1h = zh / self.norm["z_s"][..., None, None] if normalized and self.norm else zh
        need_a0h = self.dn > 0 and ("S00" in self.classes or "C01" in self.classes)
        a0h = torch.fft.fft2(a0) if need_a0h else None
        if "M" in self.classes:
            ya = mp["y"].abs()
            out += [
                self._first(r, "r", normalized).reshape(b, -1),
                self._first(x[:, None], "x", normalized).reshape(b, -1),
                self._first(ya, "ya", normalized).reshape(b, -1),
            ]
        for name, v, vh in (("S11", a1, a1h), ("S00", a0, a0h)):
            if name not in self.classes:
                continue
            if self.dn == 0:
                out.append((v.abs() ** 2).mean(dim=(-2, -1)).reshape(b, -1))
            else:
                out.append(_corr(vh, vh, self.pos_s, npix).reshape(b, -1))
        if "S01" in self.classes:
            out.append((a0 * a1.conj()).mean(dim=(-2, -1)).reshape(b, -1))
        if "C01" in self.classes:
            # all (j1, t1, j2, t2) at tau = 0 as one real matrix product over pixels
            f0 = a0.reshape(b, J * L, npix)
            f1 = torch.view_as_real(a1.reshape(b, J * L, npix))
            g_re = f0 @ f1[..., 0].transpose(1, 2) / npix
            g_im = -(f0 @ f1[..., 1].transpose(1, 2)) / npix
            g = torch.complex(g_re, g_im).reshape(b, J, L, J, L)
            j1 = torch.tensor([p[0] for p in self.pairs], device=x.device)
            j2 = torch.tensor([p[1] for p in self.pairs], device=x.device)
            out.append(g[:, j1, :, j2, :].permute(1, 0, 2, 3).reshape(b, -1))
            if self.dn > 0:
                c = _corr(a0h[:, j1], a1h[:, j2], self.pos_c, npix)  # (B, P, L, 2A dn)
                out.append(c.reshape(b, -1))
        if "Cphase" in self.classes:
            lagged: dict[tuple[int, int], Tensor] = {}
            for d, h in self._harmonics(mp):
                hn = self._center(h, f"h{d}", normalized)  # (B, J-d, L, M, N)
                out.append((a1[:, : J - d] * hn.conj()).mean(dim=(-2, -1)).reshape(b, -1))
                for j1 in range(J - d):
                    nmax = min(J - 1 - (j1 + d), self.dn)
                    if nmax > 0:
                        pos = self.pos_c[:, : nmax * 2 * self.A]
                        hh = torch.fft.fft2(hn[:, j1])
                        lagged[(j1, j1 + d)] = _corr(a1h[:, j1], hh, pos, npix).reshape(b, -1)
            out += [lagged[p] for p in self.pairs if p in lagged]
        if "L" in self.classes:
            b1 = self._center(mp["yc"], "yc", normalized)
            b0 = self._center(mp["yc"].abs(), "yca", normalized)
            for u, v in ((b0, b0), (b0, b1), (b1, b1)):
                out.append((u * v).mean(dim=(-2, -1)).to(cplx))
        return torch.cat([o.to(cplx) for o in out], dim=1)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, J={self.J}, L={self.L}, dn={self.dn}, A={self.A}, "
            f"classes={self.classes}, lowpass_centering={self.lowpass_centering!r}, "
            f"n_moments={self.n_moments}"
        )
