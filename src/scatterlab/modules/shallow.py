"""Theory runs of wide shallow networks (`train: false`, `data: null`; see modules/theory.py).

The math is in `scatterlab.shallow` (plain torch); each module's test stage calls it, writes
`<name>.json` and `<name>_*.png` into output_dir and returns its scalars from final_metrics().
Everything runs on the CPU in float64: these are small problems, a GPU would not pay.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Annotated, Literal

import numpy as np
import torch

from scatterlab.data.datasets import check_folder_splits
from scatterlab.errors import ConfigError
from scatterlab.modules.theory import TheoryModule
from scatterlab.ranges import OpenFraction, Positive, PositiveInt, Range, Seed
from scatterlab.shallow import features as rf
from scatterlab.shallow import lazy as lz
from scatterlab.shallow import lazy_cnn as lc
from scatterlab.shallow import plots
from scatterlab.shallow import twolayer as tl

# Caps chosen so that every accepted value runs (memory and time stay bounded on a laptop).
Width = Annotated[int, Range(ge=1, le=65536)]
AlignWidth = Annotated[int, Range(ge=1, le=4096)]
Dim = Annotated[int, Range(ge=1, le=4096)]
Samples = Annotated[int, Range(ge=1, le=20_000)]
Seeds = Annotated[int, Range(ge=1, le=100)]
Steps = Annotated[int, Range(ge=1, le=1_000_000)]
Alpha = Annotated[float, Range(gt=0, le=1e8)]
RFActivation = Literal["relu", "erf", "modulus"]
Activations = Annotated[list[RFActivation], Range(ge=1)]  # a list's Range bounds its length
Dims = Annotated[list[Dim], Range(ge=1)]
# the population risk holds S x m x m matrices: 2000 keeps them under a GB at 8 seeds
StudentWidths = Annotated[list[Annotated[int, Range(ge=1, le=2000)]], Range(ge=1)]


def _nonempty(values: list, key: str) -> list:
    if len(values) == 0:
        raise ConfigError(f"module.{key}=[] is empty: give at least one value")
    return list(values)


def _finite(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{what} diverged (non-finite loss): use a smaller module.lr")


class _ShallowModule(TheoryModule):
    """TheoryModule whose metrics.json keeps finite numbers only (a slope that cannot be
    fitted, e.g. no activation pattern changed at all, is left out rather than written nan)."""

    def metric(self, key: str, value: float) -> None:
        if math.isfinite(value):
            self.metrics[key] = float(value)

    def _features(self, activations: list, dims: list, widths: list) -> None:
        """The random-feature grid: activations, input dimensions and at least two widths."""
        self.activations = _nonempty(activations, "activations")
        self.dims = _nonempty([int(d) for d in dims], "dims")
        self.widths = sorted(set(int(m) for m in _nonempty(widths, "widths")))
        if len(self.widths) < 2:
            raise ConfigError("module.widths needs two different widths to fit an exponent")


class RandomFeaturesKernelModule(_ShallowModule):
    """Empirical random-feature kernels against their closed-form limits, and the error vs m.

    activations: relu | erf | modulus; dims: input dimensions; widths: m; n: inputs, uniform on
    the unit sphere; seeds: independent feature sequences per (activation, d);
    check_width: the width of the Monte-Carlo check at fixed angles (the right panel).
    """

    def __init__(
        self,
        activations: Activations = ("relu", "erf", "modulus"),
        dims: Dims = (3, 100),
        widths: Annotated[list[Width], Range(ge=2)] = (16, 64, 256, 1024, 4096),
        n: Annotated[int, Range(ge=2, le=2048)] = 128,
        seeds: Seeds = 4,
        check_width: Annotated[int, Range(ge=1, le=2**22)] = 2**20,
        seed: Seed = 0,
        name: str = "random_features_kernel",
        output_dir: str | None = None,
    ) -> None:
        super().__init__(name, output_dir, "cpu")
        self._features(activations, dims, widths)
        self.n, self.seeds, self.check_width, self.seed = int(n), int(seeds), check_width, seed

    def compute(self) -> None:
        rows = []
        for act in self.activations:
            for d in self.dims:
                gen = torch.Generator().manual_seed(self.seed + d)
                x = rf.sphere(self.n, d, gen)
                err = rf.kernel_errors(x, self.widths, act, self.seeds, seed=self.seed + d)
                fit = rf.fit_exponent(self.widths, err)
                rows.append({"activation": act, "d": d, "errors": err, **fit})
                self.metric(f"kernel_slope/{act}/d={d}", fit["slope"])
                self.metric(f"kernel_slope_se/{act}/d={d}", fit["slope_se"])
                self.metric(
                    f"kernel_error_at_max_m/{act}/d={d}", float(np.sqrt((err[:, -1] ** 2).mean()))
                )
        # closed form against Monte Carlo at fixed angles, |x| = |x'| = 1
        angles = torch.linspace(0, math.pi, 9, dtype=torch.float64)
        pts = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
        check = {"angles": angles, "m": self.check_width, "kernels": {}}
        for act in self.activations:
            gen = torch.Generator().manual_seed(self.seed)
            exact = rf.limit_kernel(pts[:1], pts, act)[0]
            mc = rf.empirical_kernel(pts[:1], pts, self.check_width, act, gen)[0]
            check["kernels"][act] = {"closed_form": exact, "monte_carlo": mc}
            self.metric(f"closed_form_max_abs_err/{act}", float((mc - exact).abs().max()))
        self.results = {"widths": self.widths, "n": self.n, "errors": rows, "check": check}
        if (path := self.plot_path("errors")) is not None:
            plots.kernel_errors(_np(self.results), path)


class RandomFeaturesRainbowModule(_ShallowModule):
    """Procrustes (rainbow) alignment of two independent random-feature maps against m.

    The alignment A is fitted on n_fit inputs (uniform on the sphere S^{d-1}) and its error
    measured on n_test held-out inputs. Keep n_fit well above max(widths): for m >= n_fit the
    fitted A interpolates (its error on the fit set is the Bures distance of the Gram
    matrices) and the held-out error measures the finite sample, not the width.
    """

    def __init__(
        self,
        activations: Activations = ("relu", "erf", "modulus"),
        dims: Dims = (4, 16, 64),
        widths: Annotated[list[AlignWidth], Range(ge=2)] = (16, 32, 64, 128, 256),
        n_fit: Annotated[int, Range(ge=2, le=65536)] = 2048,
        n_test: Annotated[int, Range(ge=1, le=65536)] = 512,
        seeds: Annotated[int, Range(ge=1, le=20)] = 2,
        seed: Seed = 0,
        name: str = "random_features_rainbow",
        output_dir: str | None = None,
    ) -> None:
        super().__init__(name, output_dir, "cpu")
        self._features(activations, dims, widths)
        self.n_fit, self.n_test, self.seeds, self.seed = n_fit, n_test, seeds, seed

    def compute(self) -> None:
        from tqdm.auto import tqdm

        rows = []
        bar = tqdm(total=len(self.activations) * len(self.dims) * self.seeds, desc="alignment")
        for act in self.activations:
            for d in self.dims:
                gen = torch.Generator().manual_seed(self.seed + d)
                x_fit, x_test = rf.sphere(self.n_fit, d, gen), rf.sphere(self.n_test, d, gen)
                fit, test, r2 = (np.zeros((self.seeds, len(self.widths))) for _ in range(3))
                for s in range(self.seeds):
                    for j, m in enumerate(self.widths):
                        al = rf.alignment(x_fit, x_test, m, act, gen)
                        fit[s, j], test[s, j] = al["fit_error"], al["test_error"]
                        r2[s, j] = al["r2"]
                    bar.update()
                slope = rf.fit_exponent(self.widths, test)
                # the local exponent over the three widest maps (the asymptotic regime)
                tail = rf.fit_exponent(self.widths[-3:], test[:, -3:])["slope"]
                rows.append(
                    {
                        "activation": act,
                        "d": d,
                        "fit_error": fit,
                        "test_error": test,
                        "r2": r2,
                        "slope": slope["slope"],
                        "slope_se": slope["slope_se"],
                        "tail_slope": tail,
                    }
                )
                key = f"{act}/d={d}"
                self.metric(f"alignment_slope/{key}", slope["slope"])
                self.metric(f"alignment_tail_slope/{key}", tail)
                self.metric(f"alignment_error_at_max_m/{key}", float(test[:, -1].mean()))
        bar.close()
        self.results = {
            "widths": self.widths,
            "n_fit": self.n_fit,
            "n_test": self.n_test,
            "rows": rows,
        }
        if (path := self.plot_path("errors")) is not None:
            plots.alignment_errors(_np(self.results), path)


def _data(d: int, m0: int, n: int, n_test: int, gen: torch.Generator) -> tuple:
    """Teacher (w*, a*) and Gaussian inputs x ~ N(0, I_d) with the teacher's outputs."""
    w_star, a_star = tl.teacher(d, m0, gen)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen)
    x_test = torch.randn(n_test, d, dtype=torch.float64, generator=gen)
    y = tl.forward(x, w_star[None], a_star[None])[0]
    y_test = tl.forward(x_test, w_star[None], a_star[None])[0]
    return w_star, a_star, x, y, x_test, y_test


class MeanFieldTwoLayerModule(_ShallowModule):
    """Teacher-student in the mean-field scaling: GD on the particles against the width m.

    d: input dimension; m0: teacher neurons; widths: student widths m; seeds: runs per width
    (trained at once); steps, lr: GD steps and step in mean-field time (particles move by
    lr * m * gradient); init_scale: |w_i| = |a_i| at initialisation; tol: a run converged
    when its final training loss is below tol times the loss of the zero predictor;
    loss: empirical (n_train Gaussian samples, the test loss on n_test others) or population
    (the exact risk for x ~ N(0, I_d) through the arc-cosine kernel: no samples, no
    overfitting, cost m (m + m0) d per step; the way to run d = 100).
    width: one student width instead of the list `widths` (what a study over m sweeps, one
    job per width, all seeds of the job trained at once); its metrics are then also written
    without the `/m=...` suffix, so that every job of the study has the same keys.
    """

    CONFIG_CHECKS = (
        (
            "max(widths if width is None else [width]) >= m0",
            "add a student width >= module.m0 or lower m0",
        ),
    )

    def __init__(
        self,
        d: Annotated[int, Range(ge=2, le=1000)] = 2,
        m0: Annotated[int, Range(ge=1, le=100)] = 5,
        widths: StudentWidths = (5, 10, 20, 40, 80, 160),
        seeds: Annotated[int, Range(ge=1, le=64)] = 8,
        steps: Steps = 3000,
        lr: Annotated[float, Range(gt=0, le=10)] = 0.2,
        init_scale: Annotated[float, Range(gt=0, le=10)] = 0.5,
        n_train: Samples = 128,
        n_test: Samples = 1024,
        tol: OpenFraction = 1e-3,
        loss: Literal["empirical", "population"] = "empirical",
        plot_widths: list[PositiveInt] = (5, 160),
        width: Annotated[int, Range(ge=1, le=2000)] | None = None,
        seed: Seed = 0,
        name: str = "meanfield_two_layer",
        output_dir: str | None = None,
    ) -> None:
        super().__init__(name, output_dir, "cpu")
        if width is not None:
            widths = [width]
        self.widths = sorted(set(int(m) for m in _nonempty(widths, "widths")))
        self.single = width is not None
        if max(self.widths) < m0:
            key = "module.width" if self.single else "module.widths"
            raise ConfigError(
                f"module.m0={m0} is wider than every student ({key}={self.widths}): "
                "add a width >= m0 or use a smaller teacher"
            )
        self.d, self.m0, self.seeds, self.steps, self.lr = d, m0, seeds, steps, lr
        self.init_scale, self.n_train, self.n_test, self.tol = init_scale, n_train, n_test, tol
        self.plot_widths = [int(m) for m in plot_widths if int(m) in self.widths][:2]
        self.seed, self.loss = seed, loss

    def compute(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        w_star, a_star, x, y, x_test, y_test = _data(
            self.d, self.m0, self.n_train, self.n_test, gen
        )
        population = self.loss == "population"
        zero_loss = tl.teacher_risk(w_star, a_star) if population else float(0.5 * (y**2).mean())
        zero_test = zero_loss if population else float(0.5 * (y_test**2).mean())
        runs, traj = [], {}
        for m in self.widths:
            w, a = tl.init_particles(self.seeds, m, self.d, self.init_scale, gen)
            rec = 80 if m in self.plot_widths else 0
            if population:
                r = tl.train_population(w, a, w_star, a_star, self.steps, self.lr, record=rec)
                r["test_loss"] = r["loss"]  # the population risk is the test loss
            else:
                r = tl.train(
                    x, y, w, a, self.steps, self.lr, x_test=x_test, y_test=y_test, record=rec
                )
            _finite(r["loss"][:, -1], f"mean-field GD at m={m}")
            rel = r["loss"][:, -1] / zero_loss
            dist = tl.measure_distance(r["w"], r["a"], w_star, a_star)
            med = r["loss"].median(0).values
            # late-time rate: log-log slope of the median loss over the last decade of steps
            late = r["steps"] >= max(self.steps // 10, 1)
            logt, logl = np.log(r["steps"][late].numpy()), np.log(med[late].clamp_min(1e-300))
            rate = float(np.polyfit(logt, logl.numpy(), 1)[0]) if len(logt) >= 2 else float("nan")
            hit = (r["loss"] / zero_loss < self.tol).double().argmax(1)
            ever = (r["loss"] / zero_loss < self.tol).any(1)
            t_hit = torch.where(ever, r["steps"][hit].double(), torch.tensor(float("nan")))
            runs.append(
                {
                    "m": m,
                    "steps": r["steps"],
                    "loss": r["loss"],
                    "test_loss": r["test_loss"],
                    "final_rel_loss": rel,
                    "final_test_rel_loss": r["test_loss"][:, -1] / zero_test,
                    "distance": dist,
                    "converged_fraction": float((rel < self.tol).double().mean()),
                    "late_loss_slope": rate,
                    "steps_to_tol": t_hit,
                }
            )
            key = f"m={m}"
            self.metric(f"final_rel_loss_median/{key}", float(rel.median()))
            self.metric(f"distance_median/{key}", float(dist.median()))
            self.metric(f"converged_fraction/{key}", runs[-1]["converged_fraction"])
            if self.single:  # one width per job (a study over m): the same keys in every job
                test_rel = runs[-1]["final_test_rel_loss"]
                self.metric("m", float(m))
                self.metric("final_rel_loss_median", float(rel.median()))
                self.metric("final_rel_loss_mean", float(rel.mean()))
                self.metric("final_test_rel_loss_median", float(test_rel.median()))
                self.metric("distance_median", float(dist.median()))
                self.metric("converged_fraction", runs[-1]["converged_fraction"])
            if rec:
                traj[m] = {"w": r["traj_w"][:, 0].numpy(), "a": r["traj_a"][:, 0].numpy()}
        widest = runs[-1]
        self.metric("late_loss_slope/widest", widest["late_loss_slope"])
        self.results = {
            "d": self.d,
            "m0": self.m0,
            "loss": self.loss,
            "zero_loss": zero_loss,
            "teacher": {"w": w_star, "a": a_star},
            "runs": runs,
        }
        if (path := self.plot_path("summary")) is not None:
            teacher = (w_star.numpy(), a_star.numpy())
            plots.meanfield(_np(self.results), traj, teacher, path)


class LazyTrainingModule(_ShallowModule):
    """The output-scale family alpha (f(theta) - f(theta_0)), loss / alpha^2, against alpha.

    One initialisation theta_0 (width m) is trained for every alpha at once; per activation
    (relu: the network of the mean-field runs; softplus: a smooth relu, the setting of
    the theorem) we measure |theta - theta_0| / |theta_0|, the fraction of changed activation
    signs on test inputs, the distance |g_alpha - g_lin| / |g_lin| to the linearised model on
    test inputs (g_lin: exact GD of the tangent-kernel model), and the test losses. The slopes
    are fitted over alpha >= fit_min_alpha. symmetric: pairs (w, a), (w, -a) at init (the
    paper's), under which the second-order term of a smooth model cancels.
    """

    CONFIG_CHECKS = (("m % 2 == 0 or not symmetric", "use an even module.m with symmetric=true"),)

    def __init__(
        self,
        d: Annotated[int, Range(ge=2, le=1000)] = 2,
        m0: Annotated[int, Range(ge=1, le=100)] = 5,
        m: Annotated[int, Range(ge=2, le=10_000)] = 100,
        alphas: Annotated[list[Alpha], Range(ge=2)] = (1, 3, 10, 30, 100, 300, 1000, 3000),
        activations: Annotated[list[Literal["relu", "softplus"]], Range(ge=1)] = (
            "relu",
            "softplus",
        ),
        steps: Steps = 1000,
        lr: Annotated[float, Range(gt=0, le=10)] = 0.2,
        init_scale: Annotated[float, Range(gt=0, le=10)] = 1.0,
        n_train: Samples = 100,
        n_test: Samples = 512,
        symmetric: bool = False,
        fit_min_alpha: Positive = 10.0,
        seed: Seed = 0,
        name: str = "lazy_training",
        output_dir: str | None = None,
    ) -> None:
        super().__init__(name, output_dir, "cpu")
        self.alphas = _fit_alphas(alphas, fit_min_alpha)
        if symmetric and m % 2:
            raise ConfigError(f"module.m={m} must be even with module.symmetric=true")
        self.activations = _nonempty(activations, "activations")
        self.d, self.m0, self.m, self.steps, self.lr = d, m0, m, steps, lr
        self.init_scale, self.n_train, self.n_test = init_scale, n_train, n_test
        self.symmetric, self.fit_min_alpha, self.seed = symmetric, fit_min_alpha, seed

    def compute(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        w_star, a_star, x, y, x_test, y_test = _data(
            self.d, self.m0, self.n_train, self.n_test, gen
        )
        w0, a0 = tl.init_particles(1, self.m, self.d, self.init_scale, gen, self.symmetric)
        alphas = torch.tensor(self.alphas, dtype=torch.float64)
        s = len(alphas)
        sel = (alphas >= self.fit_min_alpha).numpy()
        by_act, traj = {}, {}
        for act in self.activations:
            r = tl.train(
                x,
                y,
                w0.expand(s, -1, -1).clone(),
                a0.expand(s, -1).clone(),
                self.steps,
                self.lr,
                alpha=alphas,
                x_test=x_test,
                y_test=y_test,
                record=60 if act == self.activations[0] else 0,
                activation=act,
            )
            _finite(r["loss"][:, -1], f"lazy training ({act})")
            k = lz.tangent_kernel_two_layer(x, x, w0[0], a0[0], act) * self.m
            k_test = lz.tangent_kernel_two_layer(x_test, x, w0[0], a0[0], act) * self.m
            lin = lz.linearised_predictions(k, k_test, y, self.steps, self.lr)
            _finite(lin["test"], f"the linearised model ({act})")
            g_test = alphas[:, None] * (
                tl.forward(x_test, r["w"], r["a"], act) - tl.forward(x_test, w0, a0, act)
            )
            gap = (g_test - lin["test"]).norm(dim=1) / lin["test"].norm().clamp_min(1e-300)
            row = {
                "relative_change": tl.relative_change(r["w"], r["a"], r["w0"], r["a0"]),
                "pattern_change": tl.pattern_change(x_test, r["w"], r["w0"]),
                "linear_gap": gap,
                "train_loss": r["loss"][:, -1],
                "test_loss": r["test_loss"][:, -1],
                "linear_train_loss": float(0.5 * ((lin["train"] - y) ** 2).mean()),
                "linear_test_loss": float(0.5 * ((lin["test"] - y_test) ** 2).mean()),
            }
            for key in ("relative_change", "pattern_change", "linear_gap"):
                v = row[key].numpy()[sel]
                ok = v > 0  # no pattern changes at all at the largest alphas: left out of the fit
                slope = (
                    rf.fit_exponent(alphas.numpy()[sel][ok], v[ok])["slope"]
                    if ok.sum() >= 2
                    else float("nan")
                )
                row[f"{key}_slope"] = slope
                self.metric(f"{key}_slope/{act}", slope)
            self.metric(f"linear_test_loss/{act}", row["linear_test_loss"])
            self.metric(f"test_loss_at_max_alpha/{act}", float(row["test_loss"][-1]))
            self.metric(f"test_loss_at_min_alpha/{act}", float(row["test_loss"][0]))
            by_act[act] = row
            if "traj_w" in r:
                for i in (0, s - 1):
                    title = f"{act}, alpha = {self.alphas[i]:g}: particles $|a_i| w_i$"
                    traj[title] = {"w": r["traj_w"][:, i].numpy(), "a": r["traj_a"][:, i].numpy()}
        self.results = {
            "d": self.d,
            "m0": self.m0,
            "m": self.m,
            "alphas": self.alphas,
            "fit_min_alpha": self.fit_min_alpha,
            "by_activation": by_act,
        }
        teacher = (w_star.numpy(), a_star.numpy())
        if (path := self.plot_path("scaling")) is not None:
            plots.lazy(_np(self.results), path)
        if (path := self.plot_path("particles")) is not None and traj:
            plots.lazy_particles(traj, teacher, path)


class LazyCNNModule(_ShallowModule):
    """Lazy training of a small ReLU CNN on real images against alpha (REDUCED version of the
    CIFAR panel of Chizat, Oyallon & Bach 2019; `scatterlab.shallow.lazy_cnn`).

    For every alpha of `alphas` the same initialisation theta_0 is trained by full-batch GD
    on L(alpha (f(theta) - f(theta_0))) / alpha^2 (square loss on one-hot labels) for `steps`
    steps of min(lr, lr_active * alpha); the linearised model at theta_0 (Jacobian-vector
    products) is trained once, it does not depend on alpha. Measured per alpha: test
    accuracy, |theta - theta_0| / |theta_0|, the fraction of unchanged ReLU activation
    patterns on the test images, the distance |g_alpha - g_lin| / |g_lin| to the linearised
    model's test outputs and the agreement of their predicted classes; slopes against alpha
    fitted over alpha >= fit_min_alpha. Data: the embedded scikit-learn digits (8x8), a
    random split of n_train + n_test images (at most 1797), or, with data_root set, a
    random CIFAR-10 subset (32x32 RGB) read from JPEG folders (data_root/train/<class>/,
    data_root/test/<class>/: `tar xJf cifar10-jpeg.tar.xz -C DIR`). channels: width of both
    convolutions.

    network: "cnn" (the small ReLU CNN, `channels`) or "scattering" (the project's learned
    scattering network, `scatterlab.models.LearnedScattering`, blocks of output widths
    `widths` with L angles, modulus, complex P_j, skip; its standardizations and BatchNorm
    frozen at theta_0's statistics of the training images, so that f is a per-image
    function). Its linearisation goes through the double-vjp trick (its custom autograd
    Functions have no forward mode; `lazy_cnn.LinearisedMap`), and its "activation pattern"
    is the quadrant of the phase of every modulus input z (the signs of Re z and Im z),
    the analogue of a ReLU's sign (`lazy_cnn.unchanged_phase_patterns`).
    """

    CONFIG_CHECKS = (
        (
            "data_root is not None or n_train + n_test <= 1797",
            "the digits have 1797 images: lower n_train or n_test",
        ),
    )

    def __init__(
        self,
        alphas: Annotated[list[Alpha], Range(ge=2)] = (0.01, 0.1, 1, 10, 100),
        channels: Annotated[int, Range(ge=1, le=128)] = 16,
        network: Literal["cnn", "scattering"] = "cnn",
        widths: Annotated[list[Annotated[int, Range(ge=1, le=128)]], Range(ge=1, le=4)] = (8, 16),
        L: Annotated[int, Range(ge=1, le=8)] = 4,
        n_train: Annotated[int, Range(ge=10, le=50_000)] = 500,
        n_test: Annotated[int, Range(ge=10, le=10_000)] = 500,
        data_root: str | None = None,
        steps: Annotated[int, Range(ge=1, le=100_000)] = 300,
        lr: Annotated[float, Range(gt=0, le=10)] = 0.1,
        lr_active: Annotated[float, Range(gt=0, le=100)] = 2.0,
        fit_min_alpha: Positive = 1.0,
        seed: Seed = 0,
        name: str = "lazy_training_cnn",
        output_dir: str | None = None,
    ) -> None:
        super().__init__(name, output_dir, "cpu")
        self.alphas = _fit_alphas(alphas, fit_min_alpha)
        if data_root is None and n_train + n_test > 1797:
            raise ConfigError(
                f"module.n_train + module.n_test = {n_train + n_test}: the digits have 1797 "
                "images, lower n_train or n_test"
            )
        if network not in ("cnn", "scattering"):
            raise ConfigError(f"module.network={network!r} is unknown: use cnn or scattering")
        self.network, self.widths, self.L = network, [int(w) for w in widths], L
        self.channels, self.n_train, self.n_test, self.steps = channels, n_train, n_test, steps
        if data_root is not None:  # before any work, not after Lightning has started
            check_folder_splits(
                data_root, ["train", "test"], " or drop data_root to use the embedded digits"
            )
        self.data_root = data_root
        self.lr, self.lr_active, self.fit_min_alpha, self.seed = lr, lr_active, fit_min_alpha, seed

    def compute(self) -> None:
        import time

        from tqdm.auto import tqdm

        # the test stage runs in inference mode: training needs autograd back (and tensors
        # made outside inference mode)
        with torch.inference_mode(False), torch.enable_grad(), _threads(1):
            if self.data_root is None:
                x, y, x_test, y_test = lc.load_digits_split(self.n_train, self.n_test, self.seed)
            else:
                x, y, x_test, y_test = lc.load_cifar_split(
                    self.data_root, self.n_train, self.n_test, self.seed
                )
            c_in, size = x.shape[1], x.shape[-1]
            y1 = torch.nn.functional.one_hot(y, 10).float()
            gen = torch.Generator().manual_seed(self.seed + 1)
            if self.network == "cnn":
                p0 = lc.init_cnn(self.channels, c_in, size, 10, gen)
                fn = lc.cnn_forward

                def patterns(p: lc.Params) -> float:
                    return lc.unchanged_patterns(p, p0, x_test)
            else:
                # 8x8 digits: every other block subsamples, at most 4 blocks leave 2x2 maps
                net, p0 = lc.init_scattering(self.widths, self.L, x, c_in, size, seed=self.seed + 1)
                fn = lc.functional_forward(net)

                def patterns(p: lc.Params) -> float:
                    return lc.unchanged_phase_patterns(net, p, p0, x_test)

            t0 = time.perf_counter()
            lam = lc.tangent_kernel_top(fn, p0, x, 20)
            self.metric("tangent_kernel_top", lam)  # lr < 2 / it for stable GD
            # both steps scaled down together when lr would not be stable for this data
            # (CIFAR's kernel is ~20x the digits'); 1 on the digits and the scattering net
            shrink = min(1.0, 1.8 / (lam * self.lr))
            lr, lr_active = self.lr * shrink, self.lr_active * shrink
            self.metric("lr", lr)
            lin = lc.linearised(fn, p0, x, y1, x_test, self.steps, lr)
            self.metric("linear_time_s", time.perf_counter() - t0)
            _finite(torch.tensor(lin["loss"][-1]), "the linearised model")
            lin_test = lin["test"]
            lin_acc = float((lin_test.argmax(1) == y_test).double().mean())
            f0_test = fn(p0, x_test)
            rows = {
                k: []
                for k in (
                    "test_acc",
                    "train_loss",
                    "relative_change",
                    "unchanged_patterns",
                    "linear_gap",
                    "linear_agreement",
                    "step",
                    "time_s",
                )
            }
            for alpha in tqdm(self.alphas, desc="alpha"):
                t0 = time.perf_counter()
                p, losses = lc.train_scaled(fn, p0, x, y1, alpha, self.steps, lr, lr_active)
                _finite(torch.tensor(losses[-1]), f"training at alpha={alpha:g}")
                with torch.no_grad():
                    g = alpha * (fn(p, x_test) - f0_test)
                rows["test_acc"].append(float((g.argmax(1) == y_test).double().mean()))
                rows["train_loss"].append(losses[-1])
                rows["relative_change"].append(lc.relative_change(p, p0))
                rows["unchanged_patterns"].append(patterns(p))
                gap = (g - lin_test).norm() / lin_test.norm().clamp_min(1e-30)
                rows["linear_gap"].append(float(gap))
                agree = (g.argmax(1) == lin_test.argmax(1)).double().mean()
                rows["linear_agreement"].append(float(agree))
                rows["step"].append(lc.step_size(alpha, lr, lr_active))
                rows["time_s"].append(time.perf_counter() - t0)
        rows["changed_patterns"] = [1 - u for u in rows["unchanged_patterns"]]
        alphas = np.asarray(self.alphas)
        sel = alphas >= self.fit_min_alpha
        for i, a in enumerate(self.alphas):
            for key in (
                "test_acc",
                "relative_change",
                "unchanged_patterns",
                "linear_gap",
                "linear_agreement",
                "train_loss",
            ):
                self.metric(f"{key}/alpha={a:g}", rows[key][i])
        for key in ("relative_change", "changed_patterns", "linear_gap"):
            v = np.asarray(rows[key])[sel]
            ok = v > 0  # no pattern changed at all: left out of the fit
            slope = rf.fit_exponent(alphas[sel][ok], v[ok])["slope"] if ok.sum() >= 2 else math.nan
            rows[f"{key}_slope"] = slope
            self.metric(f"{key}_slope", slope)
        self.metric("linear_test_acc", lin_acc)
        self.metric("linear_train_loss", lin["loss"][-1])
        self.metric("test_acc/min_alpha", rows["test_acc"][0])
        self.metric("test_acc/max_alpha", rows["test_acc"][-1])
        self.metric("max_alpha_time_s", max(rows["time_s"]))
        self.metric("cnn_params", float(lc.num_params(p0)))
        data = "digits 8x8" if self.data_root is None else "CIFAR-10 (JPEG q75) images 32x32"
        if self.network == "cnn":
            title = f"REDUCED: CNN ({self.channels} channels) on {self.n_train} {data}"
            pattern = "ReLU activation patterns"
        else:
            title = (
                f"REDUCED: learned scattering (widths {self.widths}, L={self.L}) on "
                f"{self.n_train} {data}"
            )
            pattern = "phase quadrants of the modulus inputs"
        self.results = {
            "title": title,
            "network": self.network,
            "pattern_label": pattern,
            "linear_mode": lin["mode"],
            "tangent_kernel_top": lam,
            "alphas": self.alphas,
            "linear_test_acc": lin_acc,
            "linear_train_loss": lin["loss"][-1],
            "fit_min_alpha": self.fit_min_alpha,
            "num_params": lc.num_params(p0),
            **rows,
        }
        if (path := self.plot_path("panel")) is not None:
            plots.lazy_cnn(self.results, path)


def _fit_alphas(alphas: list[float] | tuple[float, ...], fit_min_alpha: float) -> list[float]:
    """The sorted distinct alphas, at least two of them >= fit_min_alpha (the slope fits)."""
    out = sorted(set(float(a) for a in _nonempty(alphas, "alphas")))
    if sum(a >= fit_min_alpha for a in out) < 2:
        raise ConfigError(
            f"module.fit_min_alpha={fit_min_alpha}: fewer than two alphas >= it to fit "
            "the slopes; add larger alphas or lower it"
        )
    return out


@contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _np(x: object) -> object:
    """Tensors as numpy arrays, recursively (for the plots)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_np(v) for v in x]
    return x
