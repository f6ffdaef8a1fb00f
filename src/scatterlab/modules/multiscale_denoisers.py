"""Thin theory module of the local conditional denoisers (issue 25, claim 2): a `train: false`,
`data: null` run that trains one kind of denoiser at one receptive field on one data set and
scores it on held-out fields (the plain-torch math: ``scatterlab.multiscale.denoisers``).

One job = one (data, kind, rf) of the study ``local_denoisers``:

* kind=flat: one pixel-domain denoiser of receptive field rf;
* kind=conditional: the multiscale denoiser, one conditional denoiser of receptive field rf per
  scale j = 1..levels (on coefficients of scale j) and a low-pass denoiser that sees the whole
  coarsest field.

Both are scored on the full image (PSNR against sigma, the error split over the wavelet bands);
the conditional one also on its own task (the finest details given the clean coarse field).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.modules.theory import TheoryModule
from scatterlab.multiscale import denoisers as dn
from scatterlab.ranges import Range, Seed
from scatterlab.wsgm.dwt import check_size, wavelet_filters

log = logging.getLogger("scatterlab")

DIGITS = 1797  # scikit-learn's embedded digits


def digits_fields(size: int) -> Tensor:
    """The 1,797 embedded digits (8 x 8, values 0..16) upsampled bilinearly to size x size,
    float32 (N, 1, size, size) in [0, 1] (background 0); a fixed permutation (seed 0)."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images).float()[:, None] / 16
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))]


class LocalDenoisersModule(TheoryModule):
    """Train and score one local denoiser (flat or conditional) of receptive field ``rf``.

    data: phi4 (HMC fields at ``beta``, L = size, cached by ``scatterlab.wsgm.phi4``) or
    digits (the embedded 8 x 8 digits upsampled to size x size); fields are scaled to unit RMS
    on the training set (no centring: the networks are bias-free), so the PSNR's peak is the
    RMS and a noisy input has PSNR -20 log10 sigma.
    kind: flat | conditional; rf: receptive field (odd), in pixels for flat and in
    coefficients of each scale for conditional; levels: J (conditional: scales 1..J, then a
    low-pass denoiser on the L / 2^J field with a receptive field covering it);
    width, depth: the network (max(depth, (rf - 1) / 2) convolutions, (rf - 1) / 2 of them
    3 x 3); steps, batch, lr: Adam per network; sigma_max: training noise levels uniform on
    [0, sigma_max]; sigmas: the evaluation noise levels (one fixed noise draw).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "rf % 2 == 1",
            "module.rf must be odd (a centred window of 3 x 3 convolutions): use 5, 9, 13, 23 "
            "or 43",
        ),
        (
            "size % 2**levels == 0 and size >= 2 * 2**levels",
            "module.size must be divisible by 2^module.levels with a coarsest field of at "
            "least 2 x 2: lower module.levels or use a size like 16, 32, 64",
        ),
        (
            "data != 'digits' or n_train + n_test <= 1797",
            "the embedded digits are 1,797 images: lower module.n_train + module.n_test",
        ),
    )

    def __init__(
        self,
        data: Literal["phi4", "digits"] = "phi4",
        kind: Literal["flat", "conditional"] = "conditional",
        rf: Annotated[int, Range(ge=3, le=63)] = 5,
        size: Annotated[int, Range(ge=8, le=64)] = 32,
        levels: Annotated[int, Range(ge=1, le=4)] = 2,
        wavelet: str = "haar",
        beta: Annotated[float, Range(ge=0.01, le=10)] = 0.96,
        n_train: Annotated[int, Range(ge=8, le=4096)] = 384,
        n_test: Annotated[int, Range(ge=8, le=1024)] = 128,
        n_therm: Annotated[int, Range(ge=10, le=1000)] = 300,
        width: Annotated[int, Range(ge=2, le=128)] = 16,
        depth: Annotated[int, Range(ge=1, le=64)] = 6,
        steps: Annotated[int, Range(ge=1, le=100000)] = 300,
        batch: Annotated[int, Range(ge=2, le=1024)] = 16,
        lr: Annotated[float, Range(gt=0, le=1)] = 5e-3,
        sigma_max: Annotated[float, Range(gt=0, le=100)] = 2.0,
        sigmas: Annotated[list[Annotated[float, Range(gt=0, le=100)]], Range(ge=1, le=32)] = (
            0.25,
            0.5,
            1.0,
            2.0,
        ),
        seed: Seed = 0,
        cache_dir: str | None = None,
        num_threads: Annotated[int, Range(ge=1, le=64)] = 1,
        name: str = "local_denoisers",
        output_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name, output_dir, device)
        dn.check_rf(rf)
        check_size(size, levels)  # ConfigError: L not divisible by 2^J
        if size >> levels < 2:
            raise ConfigError(f"module.levels={levels} leaves a coarsest field below 2 x 2")
        try:
            wavelet_filters(wavelet)
        except ConfigError as exc:
            raise ConfigError(f"module.wavelet={wavelet!r}: {exc}") from None
        if data == "digits" and n_train + n_test > DIGITS:
            raise ConfigError(f"the embedded digits are {DIGITS} images: lower n_train + n_test")
        if len(sigmas) == 0:
            raise ConfigError("module.sigmas is empty: give at least one noise level")
        self.data, self.kind, self.rf, self.size, self.levels = data, kind, rf, size, levels
        self.wavelet, self.beta = wavelet, float(beta)
        self.n_train, self.n_test, self.n_therm = int(n_train), int(n_test), int(n_therm)
        self.width, self.depth, self.steps, self.batch = width, depth, steps, batch
        self.lr, self.sigma_max = float(lr), float(sigma_max)
        self.sigmas = [float(s) for s in sigmas]
        self.seed, self.cache_dir, self.num_threads = int(seed), cache_dir, int(num_threads)

    def fields(self) -> tuple[Tensor, Tensor]:
        """(train, test) fields scaled to unit RMS on the training set."""
        n = self.n_train + self.n_test
        if self.data == "digits":
            x = digits_fields(self.size)[:n]
        else:
            from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4

            cfg = Phi4Config(
                size=self.size,
                beta=self.beta,
                n_samples=n,
                n_chains=min(n, 64),
                n_therm=self.n_therm,
                seed=self.seed,
            )
            x = generate_phi4(cfg, self.cache_dir, device="cpu", progress=False)
        rms = x[: self.n_train].pow(2).mean().sqrt()
        return x[: self.n_train] / rms, x[self.n_train :] / rms

    def on_test_epoch_end(self) -> None:
        # small tensors: on a shared CPU more threads mostly spin
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            # Lightning's test stage runs in inference mode: the networks are trained here
            with torch.inference_mode(False), torch.enable_grad():
                super().on_test_epoch_end()
        finally:
            torch.set_num_threads(old)

    def compute(self) -> None:
        train, test = self.fields()
        augment = self.data == "phi4"  # lattice symmetries of phi^4; a flipped digit is no digit
        common = dict(
            rf=self.rf,
            steps=self.steps,
            batch=self.batch,
            sigma_max=self.sigma_max,
            width=self.width,
            depth=self.depth,
            lr=self.lr,
            seed=self.seed,
            augment=augment,
        )
        t0 = time.perf_counter()
        if self.kind == "flat":
            model = dn.train_flat(train, **common)
            nets = [("flat", model, 1, self.size)]
            params = sum(p.numel() for p in model.parameters())
        else:
            model = dn.train_multiscale(train, levels=self.levels, wavelet=self.wavelet, **common)
            nets = [
                (f"scale{j}", net, 4, self.size >> j) for j, net in enumerate(model.nets, 1)
            ] + [("low", model.low, 1, self.size >> self.levels)]
            params = sum(p.numel() for p in model.parameters())
        train_s = time.perf_counter() - t0
        self.metrics["train_time_s"] = train_s
        self.metrics["params"] = float(params)
        rfs = {}
        for tag, net, c_in, n in nets:
            probe = max(n, net.rf + 2)  # a probe larger than the window shows its full extent
            rfs[tag] = dn.measured_rf(net, c_in, probe)
            log.info(
                f"{self.kind} denoiser {tag}: receptive field {rfs[tag]} x {rfs[tag]} "
                f"(configured {net.rf}), {net.depth} layers, on {n} x {n} fields"
            )
        self.metrics["rf_measured"] = float(rfs["flat" if self.kind == "flat" else "scale1"])
        if self.kind == "conditional":
            self.metrics["rf_measured_low"] = float(rfs["low"])

        rows = []
        with torch.no_grad():
            for s in self.sigmas:
                y = dn.noisy_copy(test, s, seed=self.seed + 1)
                est = y - model(y) if self.kind == "flat" else model(y)
                bands = dn.band_errors(est, test, self.levels, self.wavelet)
                row = {"sigma": s, "psnr_in": dn.psnr(s * s), **bands}
                row["psnr"] = dn.psnr(bands["total"])
                self.metrics[f"psnr/sigma={s:g}"] = row["psnr"]
                for k, v in bands.items():
                    self.metrics[f"mse/sigma={s:g}/{k}"] = v
                if self.kind == "conditional":
                    row["oracle_j1"] = dn.oracle_detail_mse(model, test, s, 1, self.seed + 1)
                    self.metrics[f"mse_given_clean_coarse/sigma={s:g}/j=1"] = row["oracle_j1"]
                rows.append(row)
        self.results = {
            "data": self.data,
            "kind": self.kind,
            "rf": self.rf,
            "rf_measured": rfs,
            "size": self.size,
            "levels": self.levels,
            "rows": rows,
            "train_seconds": train_s,
        }
        if (path := self.plot_path("examples")) is not None:
            _examples(test[:3], model, self.kind, self.sigmas, path, self.data, self.rf)


def _examples(x: Tensor, model, kind: str, sigmas: list[float], path, data: str, rf: int) -> None:
    """Clean, noisy and denoised test fields at the largest two noise levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scatterlab.theory.plots import save_figure

    levels = sigmas[-2:]
    fig, axes = plt.subplots(len(x), 1 + 2 * len(levels), figsize=(2 * (1 + 2 * len(levels)), 6))
    with torch.no_grad():
        for i in range(len(x)):
            axes[i, 0].imshow(x[i, 0], cmap="gray")
            axes[0, 0].set_title("clean")
            for k, s in enumerate(levels):
                y = dn.noisy_copy(x[i : i + 1], s, seed=i)
                est = y - model(y) if kind == "flat" else model(y)
                axes[i, 1 + 2 * k].imshow(y[0, 0], cmap="gray")
                axes[i, 2 + 2 * k].imshow(est[0, 0], cmap="gray")
                axes[0, 1 + 2 * k].set_title(f"noisy, sigma={s:g}")
                axes[0, 2 + 2 * k].set_title(f"{kind}, RF {rf}")
    for a in axes.flat:
        a.set_axis_off()
    fig.suptitle(f"{data}: {kind} denoiser, receptive field {rf}")
    save_figure(fig, path)


def wiener_table(sigmas: list[float], seed: int = 0) -> str:
    """Markdown table of the global Wiener filter's PSNR on the study's two data sets (same
    fields, split, scaling and noise draw as its jobs)."""
    out = [
        "| data | " + " | ".join(f"sigma={s:g}" for s in sigmas) + " |",
        "|---|" + "---|" * len(sigmas),
        "| noisy input | " + " | ".join(f"{dn.psnr(s * s):.2f}" for s in sigmas) + " |",
    ]
    for data, kw in (("phi4", {}), ("digits", {"n_train": 1500, "n_test": 297})):
        train, test = LocalDenoisersModule(data=data, **kw).fields()
        row = [dn.psnr(dn.wiener_mse(train, test, s, seed + 1)) for s in sigmas]
        out.append(f"| {data}: Wiener filter | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m scatterlab.modules.multiscale_denoisers [OUT.md]
    import sys

    text = wiener_table([0.25, 0.5, 1.0, 2.0])
    print(text, end="")
    if len(sys.argv) > 1:
        from pathlib import Path

        Path(sys.argv[1]).write_text(text)
