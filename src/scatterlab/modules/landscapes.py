"""Thin theory modules of the random-matrix / loss-landscape experiments (`train=false` runs).

Each one computes in its test stage with `scatterlab.landscapes` (plain torch), writes
`<name>.json` and `<name>_*.png` into the run dir and returns its scalars from
`final_metrics()` (the `TheoryModule` convention of `scatterlab.modules.theory`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from tqdm import tqdm

from scatterlab.errors import ConfigError
from scatterlab.landscapes import hessian as hs
from scatterlab.landscapes import plots
from scatterlab.landscapes.jacobian_density import critical_point, jacobian_density, ks_distance
from scatterlab.landscapes.rmt import (
    Atoms,
    FreeProduct,
    FreeSum,
    MarchenkoPastur,
    Semicircle,
    Spectrum,
    cdf_from_density,
    empirical_cdf_distance,
    wigner_eigenvalues,
    wishart_eigenvalues,
)
from scatterlab.landscapes.spinglass import (
    SphericalPSpin,
    complexity,
    complexity_k,
    e_inf,
    energy_threshold,
)
from scatterlab.modules.theory import TheoryModule, _plain
from scatterlab.ranges import Range, Seed
from scatterlab.theory.jacobian import jacobian_spectrum

log = logging.getLogger("scatterlab")

Device = Literal["auto", "cpu", "cuda"]


def _ks(samples: Tensor, spec: Spectrum, lo: float, hi: float, points: int = 4001) -> float:
    """KS distance of samples to a spectrum's density integrated on [lo, hi] (+ its atom 0)."""
    # quadratic spacing: dense at the lower edge, where Marchenko-Pastur at c = 1 diverges
    x = lo + (hi - lo) * torch.linspace(0, 1, points, dtype=torch.float64) ** 2
    rho = spec.density(x) if not isinstance(spec, FreeSum) else spec.density(x, 1e-6)
    cdf = cdf_from_density(x, rho)
    return empirical_cdf_distance(samples, x, cdf)


class FreeProbabilityModule(TheoryModule):
    """Sampled Wigner / Wishart matrices, their free sums and products, against the closed
    forms and the numerical R- / S-transform densities.

    n: matrix size; ratios: Marchenko-Pastur ratios p / n; var_b: variance of the second
    semicircle of the free sum; seeds: independent matrices pooled per case.
    """

    def __init__(
        self,
        n: Annotated[int, Range(ge=20, le=3000)] = 1000,
        ratios: list[Annotated[float, Range(ge=0.05, le=20)]] = (0.25, 1.0, 4.0),
        var_b: Annotated[float, Range(ge=1e-3, le=1e3)] = 2.0,
        seeds: Annotated[int, Range(ge=1, le=20)] = 2,
        seed: Seed = 0,
        name: str = "rmt_free_probability",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.n, self.ratios, self.var_b = int(n), [float(r) for r in ratios], float(var_b)
        self.seeds, self.seed = int(seeds), int(seed)
        if not self.ratios:
            raise ConfigError("module.ratios=[] is empty: give at least one ratio p/n")

    def _gen(self, k: int) -> torch.Generator:
        return torch.Generator().manual_seed(1000 * self.seed + k)

    def compute(self) -> None:
        n, rows, panels = self.n, [], []

        def record(case: str, samples: Tensor, ks: float, theory: list, logx: bool = False):
            rows.append({"case": case, "ks": ks, "n": n})
            self.metrics[f"ks/{case}"] = ks
            panels.append(
                {
                    "samples": samples,
                    "theory": theory,
                    "title": f"{case}: KS {ks:.3f}",
                    "logx": logx,
                }
            )

        # Wigner semicircle and its moments
        sc = Semicircle(1.0)
        ev = torch.cat([wigner_eigenvalues(n, 1.0, self._gen(s)) for s in range(self.seeds)])
        x = torch.linspace(-2.2, 2.2, 400, dtype=torch.float64)
        record("wigner", ev, _ks(ev, sc, -2.0, 2.0), [(x, sc.density(x), "semicircle")])
        for k in (2, 4, 6):
            self.metrics[f"wigner_m{k}/sampled"] = float((ev**k).mean())
            self.metrics[f"wigner_m{k}/closed_form"] = sc.moment(k)
        # Marchenko-Pastur, ratio p / n (atom 1 - 1/c at 0 when c > 1)
        for c in self.ratios:
            mp = MarchenkoPastur(c, 1.0)
            m = max(1, round(n / c))  # an (n, n) Wishart from n / c samples: ratio c
            ev = torch.cat(
                [wishart_eigenvalues(n, m, 1.0, self._gen(10 + s)) for s in range(self.seeds)]
            )
            ev = torch.where(ev < 1e-9 * mp.hi, 0.0, ev)  # the atom, up to round-off
            x = torch.linspace(max(mp.lo, 0.02 * mp.hi), mp.hi, 400, dtype=torch.float64)
            ks = _ks(ev, mp, 0.0, mp.hi)
            # drawn: the continuous part (the atom at 0 is in the KS distance, not the plot)
            cont = 1 - mp.atom0
            record(
                f"mp_c={c:g}",
                ev[ev > 0],
                ks,
                [(x, mp.density(x) / cont, f"MP continuous part (atom {mp.atom0:.2f} at 0)")],
            )
            for k in (1, 2, 3):
                self.metrics[f"mp_c={c:g}_m{k}/sampled"] = float((ev**k).mean())
                self.metrics[f"mp_c={c:g}_m{k}/closed_form"] = mp.moment(k)
        # free sum of two semicircles = semicircle of the summed variance (R_A + R_B)
        b = Semicircle(self.var_b)
        fs = FreeSum(sc, b)
        ev = torch.cat([torch.linalg.eigvalsh(self._free_pair(s)) for s in range(self.seeds)])
        r = fs.support()[1] * 1.05
        x = torch.linspace(-r, r, 400, dtype=torch.float64)
        exact = Semicircle(1.0 + self.var_b)
        self.metrics["free_sum_sc/max_density_error"] = float(
            (fs.density(x, 1e-7) - exact.density(x)).abs().max()
        )
        record(
            "wigner+wigner",
            ev,
            _ks(ev, exact, -r, r),
            [(x, fs.density(x, 1e-7), "R-transform sum"), (x, exact.density(x), "semicircle")],
        )
        # free sum Wishart + Wigner (no closed form): subordination
        c = self.ratios[0]
        mp = MarchenkoPastur(c, 1.0)
        fs2 = FreeSum(mp, Semicircle(0.25))
        ev = torch.cat([self._wishart_plus_wigner(s, c) for s in range(self.seeds)])
        lo, hi = float(ev.min()) - 0.5, float(ev.max()) + 0.5
        x = torch.linspace(lo, hi, 400, dtype=torch.float64)
        record(
            f"wishart(c={c:g})+wigner(0.25)",
            ev,
            _ks(ev, fs2, lo, hi),
            [(x, fs2.density(x, 1e-6), "free sum (subordination)")],
        )
        # free product of two Wisharts (S_A S_B); m_2 = 1 + c_1 + c_2
        c1, c2 = self.ratios[0], self.ratios[-1] if len(self.ratios) > 1 else self.ratios[0]
        fp = FreeProduct([(MarchenkoPastur(c1), 1), (MarchenkoPastur(c2), 1)])
        ev = torch.cat([self._wishart_product(s, c1, c2) for s in range(self.seeds)])
        self.metrics["free_product_m2/sampled"] = float((ev**2).mean())
        ev = ev[ev > 1e-9]  # the product's atom at 0 (max of the two) is left out
        x = torch.logspace(-6, math.log10(float(ev.max()) * 1.5), 1500, dtype=torch.float64)
        rho = fp.density_on_grid(x, 1e-4).clamp_min(0)
        cont = 1 - fp.atom0
        cdf = cdf_from_density(x, rho / cont)
        ks = empirical_cdf_distance(ev, x, cdf)
        record(
            f"wishart(c={c1:g})*wishart(c={c2:g})",
            ev,
            ks,
            [(x, rho / cont, "S-transform product")],
            logx=True,
        )
        # phi((ab)^2) = phi(a^2) phi(b)^2 + phi(a)^2 phi(b^2) - phi(a)^2 phi(b)^2 for free a, b
        self.metrics["free_product_m2/closed_form"] = 1 + c1 + c2
        self.results = {"n": n, "seeds": self.seeds, "cases": rows}
        if (path := self.plot_path("densities")) is not None:
            plots.histograms(panels, path)

    def _free_pair(self, s: int) -> Tensor:
        """A + B with A, B independent GOE (variances 1, var_b): asymptotically free, since a
        GOE's law is invariant under rotation."""
        g = self._gen(30 + s)
        a = torch.randn(self.n, self.n, dtype=torch.float64, generator=g)
        b = torch.randn(self.n, self.n, dtype=torch.float64, generator=g)
        a = (a + a.T) * math.sqrt(1 / (2 * self.n))
        b = (b + b.T) * math.sqrt(self.var_b / (2 * self.n))
        return a + b  # independent GOEs are already asymptotically free (rotation invariance)

    def _wishart_plus_wigner(self, s: int, c: float) -> Tensor:
        g = self._gen(40 + s)
        x = torch.randn(self.n, max(1, round(self.n / c)), dtype=torch.float64, generator=g)
        w = x @ x.T / x.shape[1]
        a = torch.randn(self.n, self.n, dtype=torch.float64, generator=g)
        return torch.linalg.eigvalsh(w + (a + a.T) * math.sqrt(0.25 / (2 * self.n)))

    def _wishart_product(self, s: int, c1: float, c2: float) -> Tensor:
        """Eigenvalues of W1 W2 (W_i = X_i X_i^T / n_i, X_i (n, n / c_i)): those of
        W1^{1/2} W2 W1^{1/2}."""
        g = self._gen(50 + s)
        ws = []
        for c in (c1, c2):
            x = torch.randn(self.n, max(1, round(self.n / c)), dtype=torch.float64, generator=g)
            ws.append(x @ x.T / x.shape[1])
        e, v = torch.linalg.eigh(ws[0])
        half = v * e.clamp_min(0).sqrt() @ v.T
        return torch.linalg.eigvalsh(half @ ws[1] @ half).clamp_min(0)


class JacobianDensityModule(TheoryModule):
    """The singular-value density of a deep random network's input-output Jacobian from
    S_{JJ^T} = S_{D^2}^L S_{W^T W}^L, against the measured singular values (KS distance of
    s^2), Gaussian vs orthogonal weights, each phi at its critical point (tanh, hard-tanh at
    q* = module.q_star)."""

    def __init__(
        self,
        phis: list[Literal["linear", "relu", "hardtanh", "tanh", "erf"]] = (
            "linear",
            "relu",
            "tanh",
        ),
        weights: list[Literal["gaussian", "orthogonal"]] = ("gaussian", "orthogonal"),
        depths: list[Annotated[int, Range(ge=1, le=256)]] = (2, 8, 32, 128),
        width: Annotated[int, Range(ge=16, le=1000)] = 300,
        seeds: Annotated[int, Range(ge=1, le=8)] = 2,
        q_star: Annotated[float, Range(ge=1e-3, le=4)] = 1 / 64,
        name: str = "jacobian_density",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.phis, self.weights = list(phis), list(weights)
        self.depths, self.width = [int(d) for d in depths], int(width)
        self.seeds, self.q_star = int(seeds), float(q_star)
        if not self.phis or not self.weights or not self.depths:
            raise ConfigError("module.phis, module.weights and module.depths must not be empty")

    def compute(self) -> None:
        rows, panels = [], []
        for phi in self.phis:
            sw2, sb2 = critical_point(phi, self.q_star)
            for weights in self.weights:
                cases = []
                for depth in self.depths:
                    t0 = time.perf_counter()
                    th = jacobian_density(phi, sw2, sb2, depth, weights)
                    t_th = time.perf_counter() - t0
                    meas = jacobian_spectrum(
                        phi, sw2, sb2, self.width, depth, weights, self.seeds, self.sim_device
                    )
                    sv = meas["singular_values"].cpu()
                    ks = ks_distance(sv, th)
                    key = f"{phi}_{weights}_L{depth}"
                    self.metrics[f"ks/{key}"] = ks
                    rows.append(
                        {
                            "phi": phi,
                            "weights": weights,
                            "depth": depth,
                            "sw2": sw2,
                            "sb2": sb2,
                            "ks": ks,
                            "atom0": th["atom0"],
                            "mass": th["mass"],
                            "var_theory": th["var"],
                            "var_measured": meas["var"],
                            "theory_time_s": t_th,
                            "lam": th["lam"],
                            "rho": th["rho"],
                            "singular_values": sv,
                        }
                    )
                    log.info(f"{key}: KS {ks:.4f} (theory {t_th:.1f} s)")
                    cases.append(
                        (th["lam"], th["cdf"], sv.reshape(-1) ** 2, f"L={depth}: KS {ks:.3f}")
                    )
                panels.append(
                    {
                        "title": f"{phi}, {weights} weights (N={self.width}, {self.seeds} nets)",
                        "cases": cases,
                        "xlabel": "log10 s^2",
                    }
                )
        self.metrics["ks/max"] = max(r["ks"] for r in rows)
        self.results = {"width": self.width, "seeds": self.seeds, "rows": rows}
        if (path := self.plot_path("densities")) is not None:
            plots.cdfs(panels, path, cols=len(self.weights))


def _digits(samples: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The first `samples` scikit-learn digits: (samples, 64) in [0, 1], labels (samples,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data[:samples] / 16.0, dtype=dtype)
    return x, torch.as_tensor(d.target[:samples]).long()


def _mlp(sizes: list[int], activation: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh() if activation == "tanh" else nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def _smoothed(r: dict, key: str) -> Tensor:
    """The exact eigenvalues r[key] as an equal-weight density on r["grid"], smoothed at 1 % of
    max|eig| of the full Hessian."""
    eig = r[key]
    weights = torch.full((1, len(eig)), 1 / len(eig), dtype=torch.float64)
    return hs.slq_density(eig[None], weights, r["grid"], 0.01 * float(r["eig"].abs().max()))


class HessianSpectrumModule(TheoryModule):
    """The Hessian of a small MLP's cross-entropy on the digits, at initialisation and after
    training: exact eigenvalues beside stochastic Lanczos quadrature, Lanczos top-k, Hutchinson
    trace, index, the Gauss-Newton / residual split H = H_0 + H_1 and the free-probability
    prediction H_0 boxplus H_1; then the SLQ cost on a larger MLP (Hessian-vector products and
    seconds, one HVP against one gradient).
    """

    def __init__(
        self,
        hidden: list[Annotated[int, Range(ge=1, le=64)]] = (10,),
        activation: Literal["tanh", "relu"] = "tanh",
        samples: Annotated[int, Range(ge=10, le=1797)] = 256,
        train_steps: Annotated[int, Range(ge=0, le=5000)] = 300,
        lr: Annotated[float, Range(gt=0, le=0.1)] = 0.01,
        lanczos_steps: Annotated[int, Range(ge=2, le=300)] = 80,
        probes: Annotated[int, Range(ge=1, le=64)] = 8,
        hutchinson_samples: Annotated[int, Range(ge=2, le=2000)] = 200,
        top_k: Annotated[int, Range(ge=1, le=20)] = 5,
        large_hidden: list[Annotated[int, Range(ge=1, le=1024)]] = (256, 256),
        large_steps: Annotated[int, Range(ge=2, le=300)] = 40,
        large_probes: Annotated[int, Range(ge=1, le=64)] = 2,
        seed: Seed = 0,
        name: str = "hessian_spectrum",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.hidden, self.activation = [int(h) for h in hidden], activation
        self.samples, self.train_steps, self.lr = int(samples), int(train_steps), float(lr)
        self.lanczos_steps, self.probes = int(lanczos_steps), int(probes)
        self.hutchinson_samples, self.top_k = int(hutchinson_samples), int(top_k)
        self.large_hidden, self.seed = [int(h) for h in large_hidden], int(seed)
        self.large_steps, self.large_probes = int(large_steps), int(large_probes)
        params = sum(a * b + b for a, b in zip([64, *self.hidden], [*self.hidden, 10], strict=True))
        if params > 4000:
            raise ConfigError(
                f"module.hidden={self.hidden} gives {params} parameters: the exact Hessian is "
                "formed for <= 4000; use smaller hidden layers (large_hidden is SLQ only)"
            )

    def _analyse(self, op: hs.HessianOperator, tag: str) -> dict:
        """Exact spectra of H, H_0, H_1 and every estimator beside them."""
        h, h0 = op.full(), op.full("gauss_newton")
        ev, ev0, ev1 = (torch.linalg.eigvalsh(m) for m in (h, h0, h - h0))
        nodes, weights = hs.slq(op, self.lanczos_steps, self.probes, self.seed)
        tr, tr_se = hs.hutchinson_trace(op, self.hutchinson_samples, self.seed)
        top = hs.top_eigenvalues(op, self.top_k, seed=self.seed)
        scale = float(ev.abs().max())
        tol = 1e-9 * scale  # zero modes (softmax shift, dead units) are not negative directions
        res = 0.01 * scale  # the resolution of the smoothed densities: index compared at -res
        # freeness of H_0 and H_1: their free sum against the exact spectrum of H
        fs = FreeSum(Atoms(ev0), Atoms(ev1))
        grid = torch.linspace(
            float(ev.min()) - 0.05 * scale,
            float(ev.max()) + 0.05 * scale,
            1500,
            dtype=torch.float64,
        )
        eta = 2 * float(grid[1] - grid[0])
        rho_free = fs.density(grid, eta)
        cdf_free = cdf_from_density(grid, rho_free)
        rho_slq = hs.slq_density(nodes, weights, grid, res)
        m = {
            f"{tag}/loss": op.loss(),
            f"{tag}/params": op.dim,
            f"{tag}/lambda_max_exact": float(ev[-1]),
            f"{tag}/lambda_max_lanczos": float(top[0]),
            f"{tag}/top{self.top_k}_max_rel_err": float(
                ((top - ev.flip(0)[: len(top)]) / ev[-1]).abs().max()
            ),
            f"{tag}/trace_exact": float(ev.sum()),
            f"{tag}/trace_hutchinson": tr,
            f"{tag}/trace_hutchinson_se": tr_se,
            f"{tag}/trace_slq": hs.slq_trace(nodes, weights, op.dim),
            f"{tag}/index_exact": hs.index(ev, tol),
            f"{tag}/index_exact_below_res": hs.index(ev, res),
            f"{tag}/index_slq_below_res": hs.slq_index(nodes, weights, res),
            f"{tag}/index_free_h0_plus_h1_below_res": float(cdf_free[grid < -res][-1])
            if bool((grid < -res).any())
            else 0.0,
            f"{tag}/w1_slq_vs_exact_rel": hs.wasserstein1(ev, nodes, weights) / scale,
            f"{tag}/w1_free_sum_vs_exact_rel": self._w1_density(ev, grid, cdf_free) / scale,
            f"{tag}/h0_min_eig": float(ev0[0]),
            f"{tag}/h1_norm_rel": float(ev1.abs().max()) / scale,
        }
        self.metrics.update(m)
        return {
            "eig": ev,
            "eig_h0": ev0,
            "eig_h1": ev1,
            "grid": grid,
            "rho_slq": rho_slq,
            "rho_free": rho_free,
            "slq_nodes": nodes,
            "slq_weights": weights,
            "metrics": m,
        }

    @staticmethod
    def _w1_density(ev: Tensor, grid: Tensor, cdf: Tensor) -> float:
        """W_1 between the eigenvalues and a CDF tabulated on grid."""
        f1 = torch.searchsorted(torch.sort(ev).values, grid, right=True).double() / len(ev)
        return float(torch.trapezoid((f1 - cdf).abs(), grid))

    def compute(self) -> None:
        # Lightning's test stage runs under inference mode; Hessians need autograd back
        with torch.inference_mode(False), torch.enable_grad():
            self._compute()

    def _compute(self) -> None:
        x, y = _digits(self.samples, torch.float64)
        model = _mlp([64, *self.hidden, 10], self.activation, self.seed)
        loss_fn = nn.functional.cross_entropy
        op = hs.HessianOperator(model, loss_fn, (x, y))
        out = {"init": self._analyse(op, "init")}
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        for _ in range(self.train_steps):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        out["trained"] = self._analyse(op, "trained")
        out["cost"] = self._cost(x, y)
        self.results = {"hidden": self.hidden, "samples": self.samples, **out}
        if (path := self.plot_path("spectra")) is not None:
            panels = []
            for tag in ("init", "trained"):
                r = out[tag]
                panels.append(
                    {
                        "exact": r["eig"],
                        "curves": [
                            (
                                r["grid"],
                                r["rho_slq"],
                                f"SLQ ({self.probes} probes x {self.lanczos_steps} steps)",
                            ),
                            (r["grid"], r["rho_free"], "free sum H0 + H1"),
                        ],
                        "title": f"{tag}: loss {r['metrics'][f'{tag}/loss']:.3f}, index "
                        f"{r['metrics'][f'{tag}/index_exact']:.3f}",
                    }
                )
            r = out["trained"]
            panels.append(
                {
                    "exact": None,
                    "curves": [
                        (r["grid"], _smoothed(r, "eig_h0"), "H0 (Gauss-Newton)"),
                        (r["grid"], _smoothed(r, "eig_h1"), "H1 (residual)"),
                    ],
                    "title": "trained: H = H0 + H1 (exact, smoothed)",
                }
            )
            plots.spectra(panels, path)

    def _cost(self, x: Tensor, y: Tensor) -> dict:
        """SLQ on the larger MLP: its cost in HVPs and seconds, HVP time / gradient time."""
        if not self.large_hidden:
            return {}
        model = _mlp([64, *self.large_hidden, 10], self.activation, self.seed)
        op = hs.HessianOperator(model, nn.functional.cross_entropy, (x, y))
        v = torch.randn(op.dim, dtype=torch.float64)

        def best(fn, reps: int = 7) -> float:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        t_grad, t_hvp = best(op.gradient), best(lambda: op.matvec(v))
        op.hvps = 0
        t0 = time.perf_counter()
        nodes, weights = hs.slq(op, self.large_steps, self.large_probes, self.seed, progress=True)
        t_slq = time.perf_counter() - t0
        c = {
            "large/params": op.dim,
            "large/grad_time_s": t_grad,
            "large/hvp_time_s": t_hvp,
            "large/hvp_over_grad": t_hvp / t_grad,
            "large/slq_hvps": op.hvps,
            "large/slq_time_s": t_slq,
            "large/lambda_max_slq": float(nodes[torch.isfinite(nodes)].max()),
        }
        self.metrics.update(c)
        return c


class SpinGlassModule(TheoryModule):
    """Spherical pure p-spin glass: projected gradient descent from many random starts for
    several N, energies per site against -E_0 and -E_inf, Riemannian Hessian index of the
    points found, and the complexity curves Theta_p, Theta_{k,p} (Choromanska et al. 2015's
    spin-glass panel; Auffinger, Ben Arous & Cerny 2013); low_precision_steps: the first
    descent steps with bfloat16 contractions (N = 400 in minutes; the last steps and the
    energies in float32); saddle_*: critical points of index k in saddle_ks at N =
    saddle_size, by eigenvector following."""

    def __init__(
        self,
        p: Annotated[int, Range(ge=2, le=6)] = 3,
        sizes: list[Annotated[int, Range(ge=2, le=400)]] = (25, 50, 100),
        restarts: Annotated[int, Range(ge=2, le=4000)] = 200,
        steps: Annotated[int, Range(ge=1, le=20000)] = 400,
        lr: Annotated[float, Range(gt=0, le=0.2)] = 0.1,
        momentum: Annotated[float, Range(ge=0, le=0.95)] = 0.8,
        index_points: Annotated[int, Range(ge=1, le=200)] = 40,
        max_k: Annotated[int, Range(ge=0, le=20)] = 3,
        saddle_size: Annotated[int, Range(ge=2, le=200)] = 30,
        saddle_ks: list[Annotated[int, Range(ge=0, le=20)]] = (1, 2, 3),
        saddle_restarts: Annotated[int, Range(ge=1, le=1000)] = 30,
        saddle_steps: Annotated[int, Range(ge=1, le=20000)] = 1000,
        low_precision_steps: Annotated[int, Range(ge=0, le=20000)] = 0,
        seed: Seed = 0,
        name: str = "spin_glass",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.p, self.sizes = int(p), [int(n) for n in sizes]
        if not self.sizes:
            raise ConfigError("module.sizes=[] is empty: give at least one N")
        for n in self.sizes:
            if float(n) ** self.p > 2.5e8:
                raise ConfigError(
                    f"module.sizes={n} with module.p={self.p}: N^p = {float(n) ** self.p:.3g} "
                    "couplings exceed 2.5e8 (1 GB); use a smaller N or p"
                )
        self.restarts, self.steps, self.lr = int(restarts), int(steps), float(lr)
        self.momentum, self.index_points, self.max_k = (
            float(momentum),
            int(index_points),
            int(max_k),
        )
        self.seed, self.low_precision_steps = int(seed), int(low_precision_steps)
        self.saddle_size, self.saddle_ks = int(saddle_size), [int(k) for k in saddle_ks]
        self.saddle_restarts, self.saddle_steps = int(saddle_restarts), int(saddle_steps)
        if any(k > self.saddle_size - 1 for k in self.saddle_ks):
            raise ConfigError(
                f"module.saddle_ks={self.saddle_ks}: an index k must be <= module.saddle_size - 1 "
                f"= {self.saddle_size - 1} (the sphere's dimension)"
            )
        if float(self.saddle_size) ** self.p > 2.5e8:
            raise ConfigError(
                f"module.saddle_size={self.saddle_size} with module.p={self.p}: too many "
                "couplings (> 2.5e8); use a smaller saddle_size or p"
            )

    def _saddles(self) -> dict:
        return _spin_glass_saddles(self)

    def compute(self) -> None:
        p = self.p
        ei, e0 = e_inf(p), energy_threshold(p)
        energies, index, table = {}, {}, []
        for n in self.sizes:
            sg = SphericalPSpin(n, p, self.seed, torch.float32)
            t0 = time.perf_counter()
            r = sg.descend(
                sg.random_points(self.restarts, self.seed + 1),
                self.lr,
                self.steps,
                momentum=self.momentum,
                progress=True,
                low_precision_steps=self.low_precision_steps,
            )
            dt = time.perf_counter() - t0
            e = r["energy"].double()
            k = min(self.index_points, self.restarts)
            pts = r["sigma"][:k].double()
            sg64 = sg.to(torch.float64)
            eig = sg64.riemannian_hessian_eigenvalues(pts)
            idx = (eig < -1e-6 * eig.abs().amax(-1, keepdim=True)).double().mean(-1)
            energies[n], index[n] = e, {"energy": e[:k], "index": idx, "lambda_min": eig[:, 0]}
            row = {
                "N": n,
                "restarts": self.restarts,
                "mean": float(e.mean()),
                "sd": float(e.std()),
                "min": float(e.min()),
                "max": float(e.max()),
                "grad_rms_max": float(r["grad_rms"].max()),
                "steps": r["steps"],
                "time_s": dt,
                "index_mean": float(idx.mean()),
                "lambda_min_mean": float(eig[:, 0].mean()),
            }
            table.append(row)
            for key in ("mean", "sd", "min", "grad_rms_max", "index_mean", "time_s"):
                self.metrics[f"N={n}/{key}"] = row[key]
        saddles = self._saddles()
        if len(self.sizes) > 1:  # finite-size trend: mean energy = a + b / N, a the N -> inf value
            inv = np.array([1 / r["N"] for r in table])
            b, a = np.polyfit(inv, np.array([r["mean"] for r in table]), 1)
            self.metrics["mean_energy_fit_1_over_N/intercept"] = float(a)
            self.metrics["mean_energy_fit_1_over_N/slope"] = float(b)
        u = torch.linspace(-e0 - 0.1, 0.2, 1200, dtype=torch.float64)
        theta = complexity(u, p)
        theta_k = {k: complexity_k(u, k, p) for k in range(self.max_k + 1)}
        self.metrics.update({"E_inf": ei, "E_0": e0})
        if p > 2:
            for k in range(self.max_k + 1):
                self.metrics[f"E_{k}_index"] = energy_threshold(p, k)
        self.results = {
            "p": p,
            "E_inf": ei,
            "E_0": e0,
            "table": table,
            "energies": energies,
            "index": index,
            "complexity": {"u": u, "theta": theta, "theta_k": theta_k},
            "saddles": saddles,
        }
        if (path := self.plot_path("energies")) is not None:
            plots.spin_glass(self.results, path)


class HessianIndexModule(TheoryModule):
    """Critical points of a one-hidden-layer tanh regression (random Gaussian inputs; targets
    from a random teacher of the same shape plus noise, or pure noise; squared loss, small
    weight decay) at many loss levels, found by Newton /
    Levenberg-Marquardt on the gradient (`scatterlab.landscapes.critical`) from points along
    gradient-descent trajectories and from random points of several scales; their index
    against their loss with Pennington & Bahri's law alpha = a |(eps - eps_c) / eps_c|^k fitted
    (k free and k = 3/2), and the exact Hessian spectrum at a few loss levels beside the free
    sum H_0 boxplus H_1 of its Gauss-Newton and residual parts.
    """

    def __init__(
        self,
        inputs: Annotated[int, Range(ge=1, le=32)] = 4,
        hidden: Annotated[int, Range(ge=1, le=32)] = 8,
        outputs: Annotated[int, Range(ge=1, le=8)] = 2,
        samples: Annotated[int, Range(ge=2, le=2000)] = 200,
        teacher: bool = True,
        noise: Annotated[float, Range(ge=0, le=10)] = 0.1,
        decay: Annotated[float, Range(ge=0, le=1)] = 0.01,
        trajectories: Annotated[int, Range(ge=1, le=512)] = 32,
        gd_steps: Annotated[int, Range(ge=1, le=20000)] = 1000,
        gd_lr: Annotated[float, Range(gt=0, le=2)] = 0.5,
        snapshots: Annotated[int, Range(ge=1, le=100)] = 8,
        random_starts: Annotated[int, Range(ge=0, le=4096)] = 128,
        scales: list[Annotated[float, Range(gt=0, le=10)]] = (0.5, 1.0, 2.0, 3.0),
        iters: Annotated[int, Range(ge=1, le=2000)] = 60,
        tol: Annotated[float, Range(gt=0, le=1e-2)] = 1e-9,
        spectra: Annotated[int, Range(ge=0, le=6)] = 3,
        seed: Seed = 0,
        name: str = "hessian_index",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.d, self.n, self.k, self.m = int(inputs), int(hidden), int(outputs), int(samples)
        self.decay, self.trajectories = float(decay), int(trajectories)
        self.teacher, self.noise = bool(teacher), float(noise)
        self.gd_steps, self.gd_lr, self.snapshots = int(gd_steps), float(gd_lr), int(snapshots)
        self.random_starts, self.scales = int(random_starts), [float(x) for x in scales]
        self.iters, self.tol, self.spectra, self.seed = (
            int(iters),
            float(tol),
            int(spectra),
            int(seed),
        )
        if not self.scales:
            raise ConfigError("module.scales=[] is empty: give at least one scale of random starts")
        if self.snapshots > self.gd_steps:
            raise ConfigError(
                f"module.snapshots={self.snapshots} > module.gd_steps={self.gd_steps}: "
                "at most one start per descent step"
            )

    def compute(self) -> None:
        from scatterlab.landscapes import critical as cr

        model = cr.TwoLayerRegression(
            self.d, self.n, self.k, self.m, self.seed, self.noise, self.decay, self.teacher
        )
        scales = torch.tensor(self.scales, dtype=torch.float64)
        init = model.random_points(self.trajectories, torch.ones(1), self.seed + 1)
        every = max(1, self.gd_steps // self.snapshots)
        traj = model.descend(init, self.gd_lr, self.gd_steps, every).reshape(-1, model.dim)
        starts = torch.cat([traj, model.random_points(self.random_starts, scales, self.seed + 2)])
        t0 = time.perf_counter()
        r = cr.find_critical_points(model, starts, self.iters, self.tol)
        solve_s = time.perf_counter() - t0
        ok = r["converged"]
        theta = r["theta"][ok]
        # eps of the index law: the data loss, without the (decay / 2) |theta|^2 term
        loss = r["loss"][ok] - 0.5 * self.decay * (theta**2).sum(-1)
        hess = model.hessians(theta) if len(theta) else torch.zeros(0, model.dim, model.dim)
        alpha, eig = cr.hessian_index(hess)
        # distinct critical points: the same (loss, index) reached from several starts is one
        key = torch.stack([loss, alpha], 1)
        _, first = np.unique(np.round(key.numpy(), 9), axis=0, return_index=True)
        first = torch.as_tensor(np.sort(first))
        m = {
            "params": model.dim,
            "starts": len(starts),
            "converged": int(ok.sum()),
            "converged_fraction": float(ok.double().mean()),
            "distinct": len(first),
            "solve_time_s": solve_s,
            "grad_norm_median_unconverged": float(r["grad_norm"][~ok].median())
            if bool((~ok).any())
            else 0.0,
            "iters_median_converged": float(r["iters"][ok].double().median()) if ok.any() else 0.0,
            "alpha0_published": cr.ALPHA0,
        }
        fit = {}
        if len(first) >= 4:
            fit = cr.fit_index_law(loss[first].numpy(), alpha[first].numpy())
            m.update({f"fit/{k}": v for k, v in fit.items()})
        self.metrics.update(m)
        spectra = []
        if self.spectra and len(first):
            levels = first[torch.argsort(loss[first])]
            pick = levels[torch.linspace(0, len(levels) - 1, self.spectra).round().long().unique()]
            h0 = model.gauss_newton(theta[pick]) + self.decay * torch.eye(model.dim)
            for i, j in enumerate(pick.tolist()):
                ev = eig[j]
                ev0 = torch.linalg.eigvalsh(h0[i])
                ev1 = torch.linalg.eigvalsh(hess[j] - h0[i])
                scale = float(ev.abs().max())
                grid = torch.linspace(
                    float(ev.min()) - 0.05 * scale,
                    float(ev.max()) + 0.05 * scale,
                    800,
                    dtype=torch.float64,
                )
                fs = FreeSum(Atoms(ev0), Atoms(ev1))
                rho = fs.density(grid, 2 * float(grid[1] - grid[0]))
                cdf = cdf_from_density(grid, rho)
                neg = grid < -0.01 * scale
                spectra.append(
                    {
                        "loss": float(loss[j]),
                        "index": float(alpha[j]),
                        "index_free_sum": float(cdf[neg][-1]) if bool(neg.any()) else 0.0,
                        "index_below_1pct": float((ev < -0.01 * scale).double().mean()),
                        "eig": ev,
                        "grid": grid,
                        "rho_free": rho,
                    }
                )
        self.results = {
            "model": {
                "d": self.d,
                "n": self.n,
                "k": self.k,
                "m": self.m,
                "decay": self.decay,
                "teacher": self.teacher,
                "noise": self.noise,
            },
            "points": {"loss": loss[first], "index": alpha[first]},
            "fit": fit,
            "spectra": spectra,
            **m,
        }
        if (path := self.plot_path("index")) is not None and len(first):
            from scatterlab.landscapes.plots import index_law

            index_law(self.results, path)


# Choromanska et al. 2015, Table 1 (MNIST reduced to 10x10, n1 = 25 .. 500): Pearson correlation
# of train and test loss over restarts; from the reference notes, unverified in the paper itself
CHOROMANSKA_TABLE1 = {25: 0.7616, 50: 0.6861, 100: 0.5983, 250: 0.5302, 500: 0.4081}


class LossSurfaceDigitsModule(TheoryModule):
    """One-hidden-layer ReLU networks of growing width on the embedded digits (8x8, not
    Choromanska et al.'s 10x10 MNIST), `restarts` independent SGD runs per width trained as one
    batch: the spread of the final test losses and the train / test loss correlation per width
    (Choromanska et al. 2015, Fig. 5 and Table 1).
    """

    def __init__(
        self,
        widths: list[Annotated[int, Range(ge=1, le=2000)]] = (25, 50, 100, 250, 500),
        restarts: Annotated[int, Range(ge=3, le=500)] = 40,
        steps: Annotated[int, Range(ge=1, le=20000)] = 600,
        batch_size: Annotated[int, Range(ge=1, le=1200)] = 100,
        lr: Annotated[float, Range(gt=0, le=1)] = 0.1,
        test_fraction: Annotated[float, Range(ge=0.1, le=0.9)] = 0.33,
        seed: Seed = 0,
        name: str = "loss_surface_digits",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.widths = [int(w) for w in widths]
        if not self.widths:
            raise ConfigError("module.widths=[] is empty: give at least one hidden width")
        self.restarts, self.steps, self.batch_size = int(restarts), int(steps), int(batch_size)
        self.lr, self.test_fraction, self.seed = float(lr), float(test_fraction), int(seed)

    def compute(self) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            self._compute()

    def _train(self, xtr: Tensor, ytr: Tensor, width: int, gen: torch.Generator) -> list[Tensor]:
        """`restarts` nets (R, ...) trained by minibatch SGD, each on its own sample order."""
        r, d = self.restarts, xtr.shape[1]
        w1 = (torch.randn(r, d, width, generator=gen) / math.sqrt(d)).requires_grad_(True)
        b1 = torch.zeros(r, 1, width, requires_grad=True)
        w2 = (torch.randn(r, width, 10, generator=gen) / math.sqrt(width)).requires_grad_(True)
        b2 = torch.zeros(r, 1, 10, requires_grad=True)
        params = [w1, b1, w2, b2]
        bs = min(self.batch_size, len(xtr))
        for _ in tqdm(range(self.steps), desc=f"width {width}", leave=False):
            idx = torch.randint(0, len(xtr), (r, bs), generator=gen)
            out = torch.relu(xtr[idx] @ w1 + b1) @ w2 + b2  # (R, B, 10)
            # the sum of the restarts' mean losses: each net gets its own mean-loss gradient
            loss = nn.functional.cross_entropy(out.reshape(-1, 10), ytr[idx].reshape(-1)) * r
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p -= self.lr * g
        return [p.detach() for p in params]

    @staticmethod
    def _losses(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        w1, b1, w2, b2 = params
        out = torch.relu(x[None] @ w1 + b1) @ w2 + b2  # (R, n, 10)
        r = out.shape[0]
        ce = nn.functional.cross_entropy(out.reshape(-1, 10), y.repeat(r), reduction="none").view(
            r, -1
        )
        return ce.mean(1)

    def _compute(self) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
        y = torch.as_tensor(d.target).long()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_test = int(round(self.test_fraction * len(x)))
        te, tr = perm[:n_test], perm[n_test:]
        rows, hist = [], {}
        for width in self.widths:
            gen = torch.Generator().manual_seed(self.seed * 1000 + width)
            t0 = time.perf_counter()
            params = self._train(x[tr], y[tr], width, gen)
            with torch.no_grad():
                train_loss = self._losses(params, x[tr], y[tr])
                test_loss = self._losses(params, x[te], y[te])
            if not (torch.isfinite(train_loss).all() and torch.isfinite(test_loss).all()):
                raise ConfigError(
                    f"module.lr={self.lr:g}: SGD diverged at width {width} (non-finite loss); "
                    "use a smaller module.lr"
                )
            corr = float(np.corrcoef(train_loss.numpy(), test_loss.numpy())[0, 1])
            corr = corr if math.isfinite(corr) else 0.0  # identical losses: no correlation
            row = {
                "width": width,
                "train_loss_mean": float(train_loss.mean()),
                "test_loss_mean": float(test_loss.mean()),
                "test_loss_sd": float(test_loss.std()),
                "test_loss_cv": float(test_loss.std() / test_loss.mean()),
                "pearson_train_test": corr,
                "published_pearson": CHOROMANSKA_TABLE1.get(width, math.nan),
                "time_s": time.perf_counter() - t0,
            }
            rows.append(row)
            hist[width] = test_loss
            for k in ("test_loss_mean", "test_loss_sd", "pearson_train_test"):
                self.metrics[f"width={width}/{k}"] = row[k]
        self.results = {"restarts": self.restarts, "rows": rows, "test_losses": hist}
        if (path := self.plot_path("losses")) is not None:
            plots.loss_histograms(hist, rows, path)


def _spin_glass_saddles(module: SpinGlassModule) -> dict:
    """Index-k critical points at N = saddle_size: energy per site and the measured index of
    the converged points (RMS Riemannian gradient < 1e-3)."""
    if not module.saddle_ks:
        return {}
    sg = SphericalPSpin(module.saddle_size, module.p, module.seed, torch.float64)
    out = {}
    for k in module.saddle_ks:
        r = sg.saddles(
            sg.random_points(module.saddle_restarts, module.seed + 2 + k),
            k,
            lr=0.05,
            steps=module.saddle_steps,
            progress=True,
        )
        ok = r["grad_rms"] < 1e-3
        if not ok.any():  # none converged (few steps): describe all points; converged = 0 says so
            ok = torch.ones_like(ok)
            module.metrics[f"saddles/k={k}/converged"] = 0.0
        e, idx = r["energy"][ok], r["index"][ok]
        out[k] = {"energy": e, "index": idx, "n": module.saddle_size}
        module.metrics.setdefault(f"saddles/k={k}/converged", float(ok.double().mean()))
        module.metrics[f"saddles/k={k}/index_is_k"] = float((idx == k).double().mean())
        module.metrics[f"saddles/k={k}/mean_energy"] = float(e.mean())
    return out


class HessianSpectrumCallback(Callback):
    """`callbacks=hessian`: the Hessian spectrum of a classification run's cross-entropy at the
    start and the end of training, by stochastic Lanczos quadrature (any net, the learned
    scattering nets included; only real floating parameters are counted).

    images: a fixed seeded subset of `split` on which the loss is taken; lanczos_steps x
    probes Hessian-vector products give the density, trace, index and the extreme Ritz values
    (lambda_max: Lanczos converges to the extreme eigenvalues first). Cost on the quickstart's
    scattering net (144k parameters, 256 images): 0.44 s per HVP on 2 loaded CPU cores.
    Writes hessian_spectrum.json and hessian_spectrum.png into the run dir; `hessian/*` scalars
    go to every logger and, at the end, to metrics.json.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        images: Annotated[int, Range(ge=1, le=100_000)] = 128,
        split: Literal["train", "val", "test"] = "train",
        lanczos_steps: Annotated[int, Range(ge=2, le=300)] = 30,
        probes: Annotated[int, Range(ge=1, le=64)] = 2,
        at_start: bool = True,
        seed: Seed = 0,
    ) -> None:
        super().__init__()
        self.output_dir = Path(output_dir) if output_dir else None
        self.images, self.split, self.seed = int(images), split, int(seed)
        self.lanczos_steps, self.probes = int(lanczos_steps), int(probes)
        self.at_start = bool(at_start)
        self.history: list[dict] = []

    def _batches(self, trainer: L.Trainer, device) -> list:
        from scatterlab.data.base import device_batches

        dm = trainer.datamodule
        splits = getattr(dm, "splits", None)
        if not isinstance(splits, dict) or self.split not in splits:
            raise ConfigError(
                "callbacks=hessian needs a labelled in-memory classification data set with a "
                f"{self.split!r} split (data.splits); remove callbacks=hessian for this data"
            )
        return device_batches(dm, self.split, self.images, self.seed, device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and trainer.current_epoch == 0 and not self.history:
            self._run(trainer, pl_module, "start")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module, "end")
        last = {k: v for k, v in self.history[-1].items() if k.startswith("hessian/")}
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in last.items()})
        if trainer.is_global_zero and self.output_dir is not None:
            grid_lo = min(r["hessian/lambda_min_ritz"] for r in self.history)
            grid_hi = max(r["hessian/lambda_max"] for r in self.history)
            pad = 0.05 * (grid_hi - grid_lo + 1e-12)
            grid = torch.linspace(grid_lo - pad, grid_hi + pad, 800, dtype=torch.float64)
            sigma = 0.01 * (grid_hi - grid_lo + 1e-12)
            curves = [
                (
                    grid,
                    hs.slq_density(
                        torch.tensor(r["slq_nodes"], dtype=torch.float64),
                        torch.tensor(r["slq_weights"], dtype=torch.float64),
                        grid,
                        sigma,
                    ),
                    f"{r['stage']} (epoch {r['epoch']}): lambda_max {r['hessian/lambda_max']:.3g}",
                )
                for r in self.history
            ]
            plots.spectra(
                [{"exact": None, "curves": curves, "title": "Hessian spectral density (SLQ)"}],
                self.output_dir / "hessian_spectrum.png",
            )

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir)
        start = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()  # batch norm with its running statistics: a fixed function
        frozen = [p for p in pl_module.parameters() if p.requires_grad and p.is_complex()]
        for p in frozen:  # complex weights are left out of the Hessian (real coordinates only)
            p.requires_grad_(False)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                batches = self._batches(trainer, pl_module.device)
                op = hs.HessianOperator(
                    pl_module, lambda out, y: nn.functional.cross_entropy(out.float(), y), batches
                )
                nodes, weights = hs.slq(op, self.lanczos_steps, self.probes, self.seed)
                loss = op.loss()
        finally:
            for p in frozen:
                p.requires_grad_(True)
            pl_module.train(was_training)
        ok = torch.isfinite(nodes)
        record = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "params": op.dim,
            "complex_params_left_out": sum(p.numel() for p in frozen),
            "hessian/loss": loss,
            "hessian/lambda_max": float(nodes[ok].max()),
            "hessian/lambda_min_ritz": float(nodes[ok].min()),
            "hessian/trace_slq": hs.slq_trace(nodes, weights, op.dim),
            "hessian/index_slq": hs.slq_index(nodes, weights, 0.01 * float(nodes[ok].abs().max())),
            "hessian/hvps": op.hvps,
            "hessian/cost_s": time.perf_counter() - start,
            "slq_nodes": nodes.tolist(),
            "slq_weights": weights.tolist(),
        }
        self.history.append(record)
        scalars = {k: v for k, v in record.items() if k.startswith("hessian/")}
        for lg in trainer.loggers:
            lg.log_metrics(
                {f"{k}_{stage}": v for k, v in scalars.items()}, step=trainer.global_step
            )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "hessian_spectrum.json").write_text(
            json.dumps(_plain({"history": self.history}), indent=1)
        )


__all__ = [
    "FreeProbabilityModule",
    "LossSurfaceDigitsModule",
    "HessianSpectrumCallback",
    "HessianSpectrumModule",
    "JacobianDensityModule",
    "SpinGlassModule",
]
