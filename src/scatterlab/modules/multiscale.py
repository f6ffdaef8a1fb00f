"""Thin theory modules of the multiscale line (issue 25): `train: false`, `data: null` runs.

- ``LogConcavityModule`` (claim 1): phi^4 fields by HMC at several beta; per sample the smallest
  eigenvalue of the Hessian of E(x) and of the finest-scale conditional energy
  E(xbar_1 | x_1) in orthogonal wavelet coordinates; per scale, the conditional vs
  unconditional Hessian spectra of a critical-like Gaussian field (exact marginals); the
  score-matching fit of the finest conditional energy's couplings against the true ones.
- ``CSLCModule``: the phi^4-family energy per scale fitted by score matching and sampled
  coarse to fine with MALA, scored like WSGM's samples.
- ``StepsVsSizeModule`` (claim 3): exact-score SGM and WSGM on Gaussian fields with power-law
  spectra; the exact KL per pixel against the number of sampling steps N, the N needed to
  reach a KL target against the lattice size L, and its fitted exponent.

Both follow ``scatterlab.modules.theory.TheoryModule``: the test stage computes, writes
``<name>.json`` and ``<name>_*.png`` into output_dir, and returns scalars to metrics.json.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from scatterlab.errors import ConfigError
from scatterlab.modules.theory import TheoryModule
from scatterlab.multiscale import plots
from scatterlab.multiscale.cslc import FEATURES, fit_conditional_phi4
from scatterlab.multiscale.hessian import gaussian_scale_table, neg_laplacian, phi4_min_eigenvalues
from scatterlab.multiscale.steps import SGMTerms, WSGMTerms, power_law_spectrum, steps_needed
from scatterlab.ranges import Range, Seed
from scatterlab.wsgm.diffusion import _levels_to
from scatterlab.wsgm.dwt import check_size, wavelet_filters
from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4

Beta = Annotated[float, Range(ge=0.01, le=10)]


def _nonempty(values: list, key: str) -> list:
    if len(values) == 0:
        raise ConfigError(f"module.{key} is empty: give at least one value")
    return list(values)


class _ThreadedTheory(TheoryModule):
    """TheoryModule whose compute runs with ``num_threads`` torch threads: the tensors here are
    small, and on a shared CPU more threads mostly spin (HMC at L = 16: 2.5 s on 1 thread,
    47 s on 2 busy cores)."""

    num_threads = 1

    def on_test_epoch_end(self) -> None:
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            super().on_test_epoch_end()
        finally:
            torch.set_num_threads(old)


def _wavelet(name: str, key: str) -> str:
    """The wavelet name, or ConfigError naming the config key."""
    try:
        wavelet_filters(name)
    except ConfigError as exc:
        raise ConfigError(f"module.{key}={name!r}: {exc}") from None
    return name


def _levels(size: int, coarsest: int) -> int:
    """J = log2(size / coarsest), or ConfigError naming the module keys."""
    try:
        return _levels_to(size, coarsest)
    except ConfigError:
        raise ConfigError(
            f"module.sizes has {size}, not coarsest={coarsest} times a power of 2 (>= 2): "
            "use sizes like 16, 32, ..., 512 with module.coarsest=8"
        ) from None


def _stats(v: torch.Tensor) -> dict[str, float]:
    return {
        "min": float(v.min()),
        "median": float(v.median()),
        "max": float(v.max()),
        "fraction_positive": float((v > 0).double().mean()),
    }


class LogConcavityModule(_ThreadedTheory):
    """Smallest Hessian eigenvalues of phi^4's energy, unconditional vs conditional (claim 1).

    size: lattice L (dense L^2 x L^2 Hessians, hence <= 32); betas: phi^4 couplings;
    wavelets: orthogonal PyWavelets names (db4 is the authors' Daubechies-4 with 8 taps);
    num_threads: torch threads of the computation;
    n_samples, n_therm, thin, seed: the HMC (cached on disk, ``scatterlab.wsgm.phi4``);
    gaussian_*: the critical-like Gaussian field (P = 1 / (beta lambda + 2 m^2),
    m^2 = mass2_L (2 pi / L)^2) whose conditional Hessians are exact at every scale j <= levels.
    """

    def __init__(
        self,
        size: Annotated[int, Range(ge=4, le=32)] = 16,
        betas: list[Beta] = (0.5, 0.68, 0.8, 0.94, 1.0, 1.36, 2.0),
        wavelets: list[str] = ("haar", "db4"),
        n_samples: Annotated[int, Range(ge=2, le=256)] = 32,
        n_therm: Annotated[int, Range(ge=10, le=1000)] = 100,
        thin: Annotated[int, Range(ge=1, le=20)] = 5,
        seed: Seed = 0,
        gaussian_beta: Beta = 0.68,
        gaussian_mass2_L: Annotated[float, Range(ge=0.01, le=100)] = 0.34,
        gaussian_levels: Annotated[int, Range(ge=1, le=5)] = 3,
        cache_dir: str | None = None,
        num_threads: Annotated[int, Range(ge=1, le=64)] = 1,
        name: str = "phi4_log_concavity",
        output_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name, output_dir, device)
        if size % 2:
            raise ConfigError(f"module.size={size} must be even (one wavelet level halves it)")
        check_size(size, gaussian_levels)  # ConfigError: L not divisible by 2^J
        self.size, self.n_samples = int(size), int(n_samples)
        self.betas = [float(b) for b in _nonempty(betas, "betas")]
        self.wavelets = [str(w) for w in _nonempty(wavelets, "wavelets")]
        for w in self.wavelets:
            _wavelet(w, "wavelets")  # ConfigError for unknown or non-orthogonal wavelets
        self.n_therm, self.thin, self.seed = int(n_therm), int(thin), int(seed)
        self.g_beta, self.g_mass2_L = float(gaussian_beta), float(gaussian_mass2_L)
        self.g_levels, self.cache_dir = int(gaussian_levels), cache_dir
        self.num_threads = int(num_threads)

    def compute(self) -> None:
        rows = []
        for beta in tqdm(self.betas, desc="phi4 Hessians", leave=False):
            t0 = time.perf_counter()
            cfg = Phi4Config(
                size=self.size,
                beta=beta,
                n_samples=self.n_samples,
                n_chains=self.n_samples,
                n_therm=self.n_therm,
                thin=self.thin,
                seed=self.seed,
            )
            x = generate_phi4(cfg, self.cache_dir, device=self.sim_device, progress=False)[:, 0]
            eig = phi4_min_eigenvalues(x, beta, self.wavelets)
            fits = {w: fit_conditional_phi4(x, w) for w in self.wavelets}
            row = {
                "beta": beta,
                "size": self.size,
                "x2_mean": float(x.double().pow(2).mean()),
                "abs_m_mean": float(x.double().mean(dim=(-2, -1)).abs().mean()),
                "min_eig": {k: _stats(v) for k, v in eig.items()},
                "min_eig_per_sample": eig,
                "score_matching": {
                    "true": [beta, -2.0, 1.0],
                    "features": list(FEATURES),
                    **{w: {"theta": f["theta"], "se": f["se"]} for w, f in fits.items()},
                },
                "time_s": time.perf_counter() - t0,
            }
            rows.append(row)
            for k, st in row["min_eig"].items():
                self.metrics[f"min_eig/{k}/beta={beta:g}"] = st["median"]
                self.metrics[f"fraction_positive/{k}/beta={beta:g}"] = st["fraction_positive"]
            for w, f in fits.items():
                for name, v in zip(FEATURES, f["theta"].tolist(), strict=True):
                    self.metrics[f"score_matching/{w}/beta={beta:g}/{name}"] = v
        n = self.size
        mass2 = self.g_mass2_L * (2 * math.pi / n) ** 2
        prec = self.g_beta * neg_laplacian(n) + 2 * mass2 * torch.eye(n * n, dtype=torch.float64)
        gauss = {w: gaussian_scale_table(prec, n, self.g_levels, w) for w in self.wavelets}
        for w, table in gauss.items():
            for r in table:
                self.metrics[f"gaussian_kappa/conditional/{w}/j={r['scale']}"] = r[
                    "conditional_kappa"
                ]
                self.metrics[f"gaussian_kappa/unconditional/{w}/j={r['scale']}"] = r[
                    "unconditional_kappa"
                ]
        self.results = {
            "energy": "beta/2 sum_edges (x(u)-x(v))^2 + sum_u (x(u)^2-1)^2 (each pair once)",
            "phi4": rows,
            "gaussian": {"beta": self.g_beta, "mass2": mass2, "size": n, "scales": gauss},
        }
        if (path := self.plot_path("eigenvalues")) is not None:
            plots.log_concavity(rows, gauss, path)


class StepsVsSizeModule(_ThreadedTheory):
    """Exact sampling error of exact-score SGM vs WSGM against steps and size (claim 3).

    sizes: lattice sizes L (each a power-of-2 multiple of ``coarsest``, WSGM's J =
    log2(L / coarsest)); etas: spectrum exponents, P(k) = (lambda(k) + (2 pi mass_L / L)^2)^(-eta/2)
    (eta = 2: the critical-like mass-term field of the ``wsgm_gaussian_oracle`` study); grids:
    time grids; eps: KL-per-pixel targets; T, variance, wavelet: the sampler and transform
    (``scatterlab.wsgm``); n_max: the most steps searched; curve_steps: N of the KL curves;
    num_threads: torch threads of the computation.
    """

    def __init__(
        self,
        sizes: list[Annotated[int, Range(ge=16, le=512)]] = (16, 32, 64, 128, 256),
        etas: list[Annotated[float, Range(ge=0, le=4)]] = (2.0, 3.0),
        grids: list[Literal["uniform", "quadratic"]] = ("uniform", "quadratic"),
        eps: list[Annotated[float, Range(ge=1e-4, le=1)]] = (1e-2, 1e-3),
        T: Annotated[float, Range(ge=0.5, le=20)] = 5.0,
        mass_L: Annotated[float, Range(ge=0.01, le=100)] = 1.0,
        coarsest: Annotated[int, Range(ge=1, le=64)] = 8,
        wavelet: str = "haar",
        variance: Literal["large", "small"] = "large",
        n_max: Annotated[int, Range(ge=16, le=65536)] = 16384,
        curve_steps: list[Annotated[int, Range(ge=1, le=4096)]] = (2, 4, 8, 16, 32, 64, 256, 1024),
        num_threads: Annotated[int, Range(ge=1, le=64)] = 1,
        name: str = "steps_vs_size",
        output_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.sizes = sorted({int(s) for s in _nonempty(sizes, "sizes")})
        self.levels = {s: _levels(s, int(coarsest)) for s in self.sizes}
        self.etas = [float(e) for e in _nonempty(etas, "etas")]
        self.grids = [str(g) for g in _nonempty(grids, "grids")]
        self.eps = sorted({float(e) for e in _nonempty(eps, "eps")}, reverse=True)
        _wavelet(wavelet, "wavelet")
        self.T, self.mass_L, self.wavelet = float(T), float(mass_L), wavelet
        self.variance, self.n_max = variance, int(n_max)
        self.curve_steps = sorted({int(n) for n in curve_steps})
        self.num_threads = int(num_threads)

    def compute(self) -> None:
        rows, curves, conditions = [], [], []
        jobs = [(s, e) for e in self.etas for s in self.sizes]
        for size, eta in tqdm(jobs, desc="steps vs size", leave=False):
            spec = power_law_spectrum(size, eta, self.mass_L)
            terms = {
                "sgm": SGMTerms(spec),
                "wsgm": WSGMTerms(spec, self.levels[size], self.wavelet),
            }
            conditions.append(
                {
                    "size": size,
                    "eta": eta,
                    "sgm": terms["sgm"].condition,
                    "wsgm": terms["wsgm"].condition,
                    "wsgm_per_scale": terms["wsgm"].conditions,
                    "wsgm_low": terms["wsgm"].low.condition,
                }
            )
            self.metrics[f"condition/sgm/eta={eta:g}/L={size}"] = terms["sgm"].condition
            self.metrics[f"condition/wsgm/eta={eta:g}/L={size}"] = terms["wsgm"].condition
            for grid in self.grids:
                for model, t in terms.items():
                    cache: dict[int, float] = {}

                    def kl_at(n: int, t=t, grid=grid, cache=cache) -> float:
                        if n not in cache:
                            cache[n] = t.kl(n, self.T, grid, self.variance)
                        return cache[n]

                    curve = {
                        "size": size,
                        "eta": eta,
                        "grid": grid,
                        "model": model,
                        "steps": self.curve_steps,
                        "kl_per_pixel": [kl_at(n) for n in self.curve_steps],
                    }
                    if model == "sgm":  # the sampled study's metric, without its MC floor
                        curve["spectrum_error"] = [
                            t.spectrum_error(n, self.T, grid, self.variance)
                            for n in self.curve_steps
                        ]
                    curves.append(curve)
                    for eps in self.eps:
                        n = steps_needed(kl_at, eps, self.n_max)
                        rows.append(
                            {
                                "size": size,
                                "eta": eta,
                                "grid": grid,
                                "model": model,
                                "eps": eps,
                                "steps": n,
                            }
                        )
                        if n is not None:
                            key = f"steps_needed/{model}/eta={eta:g}/{grid}/eps={eps:g}/L={size}"
                            self.metrics[key] = float(n)
        fits = self._fits(rows)
        self.results = {
            "T": self.T,
            "variance": self.variance,
            "wavelet": self.wavelet,
            "mass_L": self.mass_L,
            "n_max": self.n_max,
            "steps_needed": rows,
            "exponents": fits,
            "conditions": conditions,
            "kl_curves": curves,
        }
        if (path := self.plot_path("steps")) is not None:
            plots.steps_vs_size(rows, path)

    def _fits(self, rows: list[dict]) -> list[dict]:
        """Least-squares exponent alpha of N_needed ~ L^alpha per (model, eta, grid, eps)."""
        fits = []
        for key in sorted({(r["model"], r["eta"], r["grid"], r["eps"]) for r in rows}):
            sel = [r for r in rows if (r["model"], r["eta"], r["grid"], r["eps"]) == key]
            ok = [r for r in sel if r["steps"] is not None]
            if len(ok) < 2:
                continue
            x = np.log([r["size"] for r in ok])
            y = np.log([r["steps"] for r in ok])
            alpha = float(np.polyfit(x, y, 1)[0])
            model, eta, grid, eps = key
            fits.append({"model": model, "eta": eta, "grid": grid, "eps": eps, "alpha": alpha})
            self.metrics[f"exponent/{model}/eta={eta:g}/{grid}/eps={eps:g}"] = alpha
        return fits


class CSLCModule(_ThreadedTheory):
    """A conditionally log-concave cascade for phi^4 (reduced CSLC / WC-RG): the phi^4-family
    ansatz (nearest-neighbour kinetic, x^2, x^4) fitted by score matching at every scale on
    ``n_train`` HMC fields, sampled coarse to fine with MALA (``n_steps`` per scale, the step
    adapted to 57% acceptance during the first half), scored against ``n_test`` held-out fields
    with the WSGM metrics (spectrum, histogram, energy per site, abs(m)); the floor is the same
    metric for ``n_samples`` training fields. The fields are the phi4 data module's when
    ``n_val``, ``n_chains``, ``n_therm`` and ``seed`` are its own (same simulation, same cache,
    train = the first n_train, test = after n_train + n_val): a row of the ``phi4_models``
    study. The sample scores also go to metrics.json under the WSGM / WPH runs' plain names
    (spectrum_error, ..., seconds_per_sample). hessian_fields: the fitted energies' smallest
    Hessian eigenvalues per scale on that many training fields (``fitted_hessians``; 0: none).
    """

    def __init__(
        self,
        size: Annotated[int, Range(ge=8, le=128)] = 16,  # L > 64: fits by DWT, not dense matrices
        beta: Beta = 0.68,
        levels: Annotated[int, Range(ge=1, le=5)] = 2,
        wavelet: str = "haar",
        n_train: Annotated[int, Range(ge=8, le=4096)] = 128,
        n_test: Annotated[int, Range(ge=8, le=512)] = 128,
        n_samples: Annotated[int, Range(ge=8, le=512)] = 128,
        n_steps: Annotated[int, Range(ge=10, le=5000)] = 400,
        n_therm: Annotated[int, Range(ge=10, le=1000)] = 100,
        seed: Seed = 0,
        cache_dir: str | None = None,
        num_threads: Annotated[int, Range(ge=1, le=64)] = 1,
        n_val: Annotated[int, Range(ge=0, le=4096)] = 0,
        n_chains: Annotated[int, Range(ge=1, le=4096)] | None = None,
        hessian_fields: Annotated[int, Range(ge=0, le=512)] = 16,
        name: str = "phi4_cslc",
        output_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name, output_dir, device)
        check_size(size, levels)
        if size >> levels < 2:
            raise ConfigError(f"module.levels={levels} leaves a coarsest field below 2 x 2")
        _wavelet(wavelet, "wavelet")
        self.size, self.beta, self.levels, self.wavelet = int(size), float(beta), levels, wavelet
        self.n_train, self.n_test, self.n_samples = int(n_train), int(n_test), int(n_samples)
        self.n_steps, self.n_therm, self.seed = int(n_steps), int(n_therm), int(seed)
        self.cache_dir, self.num_threads = cache_dir, int(num_threads)
        self.n_val, self.n_chains = int(n_val), n_chains
        self.hessian_fields = int(hessian_fields)

    def fitted_hessians(self, train: torch.Tensor, fits: list[dict]) -> dict[str, dict]:
        """Smallest Hessian eigenvalues of the fitted energies at every scale on the first
        ``hessian_fields`` training fields (``hessian.cascade_min_eigenvalues``): whether the
        fitted ansatz for the renormalised energies is conditionally log-concave where it is
        not log-concave. Also in metrics.json (hessian/<scale>/<kind>/{min,median,positive})."""
        from scatterlab.multiscale.hessian import cascade_min_eigenvalues

        if not self.hessian_fields:
            return {}
        names = ["coarsest"] + [f"scale{j}" for j in range(self.levels, 0, -1)]
        eigs = cascade_min_eigenvalues(
            train[: self.hessian_fields, 0], [f["theta"] for f in fits], self.wavelet
        )
        out = {}
        for nm, e in zip(names, eigs, strict=True):
            out[nm] = {}
            for kind, v in e.items():
                if v is None:
                    continue
                out[nm][kind] = v.tolist()
                self.metrics[f"hessian/{nm}/{kind}/min"] = float(v.min())
                self.metrics[f"hessian/{nm}/{kind}/median"] = float(v.median())
                self.metrics[f"hessian/{nm}/{kind}/positive"] = float((v > 0).double().mean())
        return out

    def compute(self) -> None:
        from scatterlab.multiscale.cslc import fit_cascade, sample_cascade
        from scatterlab.wsgm.metrics import histogram_distance, lattice_metrics, spectrum_error
        from scatterlab.wsgm.plots import comparison_figure

        cfg = Phi4Config(
            size=self.size,
            beta=self.beta,
            n_samples=self.n_train + self.n_val + self.n_test,
            n_chains=min(self.n_train + self.n_test, 256)
            if self.n_chains is None
            else int(self.n_chains),
            n_therm=self.n_therm,
            seed=self.seed,
        )
        x = generate_phi4(cfg, self.cache_dir, device="cpu", progress=False)
        train, test = x[: self.n_train], x[self.n_train + self.n_val :]
        fits = fit_cascade(train[:, 0], self.levels, self.wavelet)
        hessians = self.fitted_hessians(train, fits)
        t0 = time.perf_counter()
        samples, rates = sample_cascade(
            fits, self.size, self.n_samples, self.n_steps, self.wavelet, self.seed, True
        )
        sample_s = time.perf_counter() - t0
        floor_ref = train[: self.n_samples]
        scores = {}
        for tag, s in (("cslc", samples), ("floor", floor_ref)):
            scores[tag] = {
                "spectrum_error": spectrum_error(s, test),
                "hist_distance": histogram_distance(s, test),
                **lattice_metrics(s, test, self.beta),
            }
            for k, v in scores[tag].items():
                self.metrics[f"{tag}/{k}"] = v
        names = ["coarsest"] + [f"scale{j}" for j in range(self.levels, 0, -1)]
        for nm, r in zip(names, rates, strict=True):
            self.metrics[f"acceptance/{nm}"] = r
        self.metrics["samples_per_s"] = self.n_samples / sample_s
        # the plain names of the WSGM / WPH runs: a row of the phi4_models study
        self.metrics.update(scores["cslc"])
        self.metrics["seconds_per_sample"] = sample_s / self.n_samples
        for nm, f in zip(names, fits, strict=True):
            for feat, v in zip(FEATURES, f["theta"].tolist(), strict=True):
                self.metrics[f"theta/{nm}/{feat}"] = v
        self.results = {
            "features": list(FEATURES),
            "scales": names,
            "theta": [f["theta"] for f in fits],
            "se": [f["se"] for f in fits],
            "acceptance": rates,
            "scores": scores,
            "sample_seconds": sample_s,
            "hessians": hessians,
        }
        if (path := self.plot_path("samples")) is not None:
            torch.save(samples, path.with_name("samples.pt"))
            comparison_figure(samples, test, path, title="CSLC cascade, MALA")
