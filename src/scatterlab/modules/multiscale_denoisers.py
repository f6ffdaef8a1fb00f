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

from scatterlab.data.datasets import check_folder_splits
from scatterlab.errors import ConfigError
from scatterlab.modules.theory import TheoryModule
from scatterlab.multiscale import denoisers as dn
from scatterlab.ranges import Range, Seed
from scatterlab.wsgm.dwt import check_size, wavelet_filters
from scatterlab.wsgm.metrics import histogram_distance, lattice_metrics, spectrum_error

log = logging.getLogger("scatterlab")

DIGITS = 1797  # scikit-learn's embedded digits
# per data set: (size, n_train, n_test) when module.size / n_train / n_test are null
DATA_DEFAULTS = {"phi4": (64, 384, 128), "digits": (32, 1500, 297), "cifar_grey": (32, 4096, 512)}


def digits_fields(size: int) -> Tensor:
    """The 1,797 embedded digits (8 x 8, values 0..16) upsampled bilinearly to size x size,
    float32 (N, 1, size, size) in [0, 1] (background 0); a fixed permutation (seed 0)."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images).float()[:, None] / 16
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))]


def cifar_grey_fields(root: str, n_train: int, n_test: int, size: int = 32) -> Tensor:
    """n_train random CIFAR-10 training images then n_test random test images, in grey
    levels (PIL "L"), float32 (N, 1, size, size) in [0, 1], from the JPEG folders under root
    (optional data: never downloaded); resized bilinearly when size != 32."""
    from scatterlab.data.datasets import read_folder_splits

    parts = read_folder_splits(root, {"train": n_train, "test": n_test}, 0, "L")
    x = torch.cat([p[0] for p in parts]).float() / 255
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    return x


class LocalDenoisersModule(TheoryModule):
    """Train and score one local denoiser (flat or conditional) of receptive field ``rf``.

    data: phi4 (HMC fields at ``beta``, L = size, cached by ``scatterlab.wsgm.phi4``),
    digits (the embedded 8 x 8 digits upsampled to size x size) or cifar_grey (CIFAR-10 in
    grey levels from the JPEG folders under ``data_root``: optional, never downloaded);
    size, n_train, n_test: null gives the data set's (``DATA_DEFAULTS``: phi4 L = 64,
    384 / 128 fields; digits 32, 1,500 / 297; cifar_grey 32, 4,096 / 512), levels: null gives
    a coarsest field of 8 x 8; fields are scaled to unit RMS
    on the training set (no centring: the networks are bias-free), so the PSNR's peak is the
    RMS and a noisy input has PSNR -20 log10 sigma.
    kind: flat | conditional; rf: receptive field (odd), in pixels for flat and in
    coefficients of each scale for conditional; levels: J (conditional: scales 1..J, then a
    low-pass denoiser on the L / 2^J field with a receptive field covering it);
    width, depth: the network (max(depth, (rf - 1) / 2) convolutions, (rf - 1) / 2 of them
    3 x 3); steps, batch, lr: Adam per network; sigma_max: training noise levels uniform on
    [0, sigma_max] (with sigma_min > 0 every other one log-uniform on [sigma_min, sigma_max]);
    sigmas: the evaluation noise levels (one fixed noise draw). noise_input: the networks also
    get the noise level as a constant input channel (non-blind; still homogeneous in (y, sigma)
    jointly, and the receptive field is unchanged); blind (the authors') by default.
    n_samples: fields drawn from the prior implicit in the denoiser (0: none) by
    stochastic coarse-to-fine ascent (``denoisers.stochastic_ascent``: sample_h0, sample_beta,
    sample_sigma_end, sample_max_steps), or, with noise_input, by ancestral sampling on
    sample_steps geometric levels from sigma_max to sample_sigma_end
    (``denoisers.ancestral``), coarse to fine for kind=conditional
    (``denoisers.sample_multiscale``), scored against the held-out fields (``sample/*``).
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
            "sigma_min < sigma_max",
            "module.sigma_min must be below module.sigma_max (0: every training level uniform "
            "on [0, sigma_max])",
        ),
        (
            "data != 'digits' or n_train + n_test <= 1797",
            "the embedded digits are 1,797 images: lower module.n_train + module.n_test",
        ),
    )

    def __init__(
        self,
        data: Literal["phi4", "digits", "cifar_grey"] = "phi4",
        kind: Literal["flat", "conditional"] = "conditional",
        rf: Annotated[int, Range(ge=3, le=63)] = 5,
        size: Annotated[int, Range(ge=8, le=64)] | None = None,
        levels: Annotated[int, Range(ge=1, le=4)] | None = None,
        wavelet: str = "haar",
        beta: Annotated[float, Range(ge=0.01, le=10)] = 0.96,
        n_train: Annotated[int, Range(ge=8, le=8192)] | None = None,
        n_test: Annotated[int, Range(ge=8, le=2048)] | None = None,
        data_root: str | None = None,
        n_therm: Annotated[int, Range(ge=10, le=1000)] = 300,
        width: Annotated[int, Range(ge=2, le=128)] = 16,
        depth: Annotated[int, Range(ge=1, le=64)] = 6,
        steps: Annotated[int, Range(ge=1, le=100000)] = 300,
        batch: Annotated[int, Range(ge=2, le=1024)] = 16,
        lr: Annotated[float, Range(gt=0, le=1)] = 5e-3,
        sigma_max: Annotated[float, Range(gt=0, le=100)] = 2.0,
        sigma_min: Annotated[float, Range(ge=0, le=100)] = 0.0,
        sigmas: Annotated[list[Annotated[float, Range(gt=0, le=100)]], Range(ge=1, le=32)] = (
            0.25,
            0.5,
            1.0,
            2.0,
        ),
        n_samples: Annotated[int, Range(ge=0, le=1024)] = 0,
        sample_h0: Annotated[float, Range(gt=0, le=1)] = 0.01,
        sample_beta: Annotated[float, Range(gt=0, le=1)] = 0.5,
        sample_sigma_end: Annotated[float, Range(gt=0, le=10)] = 0.01,
        sample_max_steps: Annotated[int, Range(ge=1, le=100000)] = 1000,
        sample_steps: Annotated[int, Range(ge=1, le=100000)] = 200,
        noise_input: bool = False,
        seed: Seed = 0,
        cache_dir: str | None = None,
        num_threads: Annotated[int, Range(ge=1, le=64)] = 1,
        name: str = "local_denoisers",
        output_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name, output_dir, device)
        dn.check_rf(rf)
        size = DATA_DEFAULTS[data][0] if size is None else size
        n_train = DATA_DEFAULTS[data][1] if n_train is None else n_train
        n_test = DATA_DEFAULTS[data][2] if n_test is None else n_test
        if levels is None:  # a coarsest field of 8 x 8 (or 2 x 2 on smaller fields)
            levels = max(1, (size // 8).bit_length() - 1) if size >= 16 else 1
        if data == "cifar_grey" and data_root is None:
            raise ConfigError(
                "module.data=cifar_grey needs module.data_root=DIR, DIR the unpacked CIFAR-10 "
                "JPEG folders (tar xJf cifar10-jpeg.tar.xz -C DIR: DIR/train/<class>/*.jpg); "
                "nothing is downloaded"
            )
        if data == "cifar_grey":  # before any work, not after Lightning has started
            check_folder_splits(data_root, ["train", "test"])
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
        self.lr, self.sigma_max, self.sigma_min = float(lr), float(sigma_max), float(sigma_min)
        if self.sigma_min >= self.sigma_max:
            raise ConfigError(
                f"module.sigma_min={sigma_min} must be below module.sigma_max={sigma_max} "
                "(0: every level uniform on [0, sigma_max])"
            )
        self.sigmas = [float(s) for s in sigmas]
        self.seed, self.cache_dir, self.num_threads = int(seed), cache_dir, int(num_threads)
        self.data_root = data_root
        self.n_samples = int(n_samples)
        self.noise_input = bool(noise_input)
        self.sampler = dict(
            sigma_end=float(sample_sigma_end),
            steps=int(sample_steps),
            h0=float(sample_h0),
            beta=float(sample_beta),
            max_steps=int(sample_max_steps),
        )
        self.rms = 1.0  # the scale of the fields (set by ``fields``)

    def fields(self) -> tuple[Tensor, Tensor]:
        """(train, test) fields scaled to unit RMS on the training set."""
        n = self.n_train + self.n_test
        if self.data == "digits":
            x = digits_fields(self.size)[:n]
        elif self.data == "cifar_grey":
            x = cifar_grey_fields(self.data_root, self.n_train, self.n_test, self.size)
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
        self.rms = float(rms)
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
            sigma_min=self.sigma_min,
            noise_input=self.noise_input,
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
                est = y - model(y, s) if self.kind == "flat" else model(y, s)
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
        if self.n_samples:
            self.results["samples"] = self.sample(model, train, test)

    def sample(self, model, train: Tensor, test: Tensor) -> dict:
        """Draw ``n_samples`` fields from the denoiser's implicit prior and score them against
        the held-out fields (spectrum, histogram; for phi^4 energy per site and abs(m) on the
        unscaled fields), beside the same scores of as many training fields (the floor)."""
        g = torch.Generator().manual_seed(self.seed + 2)
        sigma0 = self.sigma_max  # the largest level the networks were trained on
        t0 = time.perf_counter()
        draw = dn.make_draw(self.noise_input, sigma0, generator=g, **self.sampler)
        with torch.no_grad():
            if self.kind == "flat":
                y0 = dn.initial_noise(self.n_samples, train, sigma0, g, self.noise_input)
                x, steps, sig = draw(dn.flat_denoiser(model), y0)
                taken = {"flat": (steps, sig)}
            else:
                x, taken = dn.sample_multiscale(
                    model, train, self.n_samples, draw, sigma0, g, self.noise_input
                )
        seconds = time.perf_counter() - t0
        floor = train[: self.n_samples]
        out = {"time_s": seconds}
        for tag, fields in (("", x), ("_floor", floor)):
            out["spectrum_error" + tag] = spectrum_error(fields, test)
            out["histogram" + tag] = histogram_distance(fields, test)
            if self.data == "phi4":
                lat = lattice_metrics(fields * self.rms, test * self.rms, self.beta)
                for k in ("energy_per_site", "energy_error", "abs_m_mean", "abs_m_w1"):
                    out[k + tag] = lat[k]
                out["energy_per_site_data"] = lat["energy_per_site_data"]
                out["abs_m_mean_data"] = lat["abs_m_mean_data"]
        for k, (v, sig) in taken.items():
            # reached: the last noise level is sample_sigma_end; else (blind ascent) stopped at
            # the denoiser's floor (its residual grew) or at sample_max_steps
            out[f"steps/{k}"] = float(v.float().mean())
            reached = sig <= self.sampler["sigma_end"] * (1 + 1e-6)
            out[f"reached/{k}"] = float(reached.float().mean())
            out[f"sigma_last/{k}"] = float(sig.median())
        for k, v in out.items():
            self.metrics[f"sample/{k}"] = v
        log.info(
            f"{self.n_samples} samples ({self.kind}, RF {self.rf}) in {seconds:.1f} s: "
            f"spectrum error {out['spectrum_error']:.3f} (floor {out['spectrum_error_floor']:.3f}),"
            f" histogram {out['histogram']:.3f} (floor {out['histogram_floor']:.3f})"
        )
        if (path := self.plot_path("samples")) is not None:
            torch.save(x, path.with_name("samples.pt"))  # unit-RMS fields (times rms: data's)
            _samples(x, test, path, f"{self.data}: {self.kind}, receptive field {self.rf}")
        return out


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
                est = y - model(y, s) if kind == "flat" else model(y, s)
                axes[i, 1 + 2 * k].imshow(y[0, 0], cmap="gray")
                axes[i, 2 + 2 * k].imshow(est[0, 0], cmap="gray")
                axes[0, 1 + 2 * k].set_title(f"noisy, sigma={s:g}")
                axes[0, 2 + 2 * k].set_title(f"{kind}, RF {rf}")
    for a in axes.flat:
        a.set_axis_off()
    fig.suptitle(f"{data}: {kind} denoiser, receptive field {rf}")
    save_figure(fig, path)


def _samples(x: Tensor, data: Tensor, path, title: str, n: int = 8) -> None:
    """Two rows: n generated fields, n held-out fields, on the same grey scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scatterlab.theory.plots import save_figure

    n = min(n, x.shape[0], data.shape[0])
    lo, hi = float(data.min()), float(data.max())
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(x[i, 0], cmap="gray", vmin=lo, vmax=hi)
        axes[1, i].imshow(data[i, 0], cmap="gray", vmin=lo, vmax=hi)
    axes[0, 0].set_title("samples", loc="left")
    axes[1, 0].set_title("held-out data", loc="left")
    for a in axes.flat:
        a.set_axis_off()
    fig.suptitle(title)
    save_figure(fig, path)


def wiener_table(sigmas: list[float], seed: int = 0, data_root: str | None = None) -> str:
    """Markdown table of the global Wiener filter's PSNR on the study's data sets (same
    fields, split, scaling and noise draw as its jobs; cifar_grey when data_root is given)."""
    out = [
        "| data | " + " | ".join(f"sigma={s:g}" for s in sigmas) + " |",
        "|---|" + "---|" * len(sigmas),
        "| noisy input | " + " | ".join(f"{dn.psnr(s * s):.2f}" for s in sigmas) + " |",
    ]
    cases = [("phi4", 64), ("phi4", 32), ("digits", 32)] + (
        [("cifar_grey", 32)] if data_root else []
    )
    for data, size in cases:
        train, test = LocalDenoisersModule(data=data, size=size, data_root=data_root).fields()
        row = [dn.psnr(dn.wiener_mse(train, test, s, seed + 1)) for s in sigmas]
        name = f"{data} {size} x {size}: Wiener filter"
        out.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m scatterlab.modules.multiscale_denoisers [OUT.md [DATA_ROOT]]
    import sys

    text = wiener_table([0.25, 0.5, 1.0, 2.0], data_root=sys.argv[2] if len(sys.argv) > 2 else None)
    print(text, end="")
    if len(sys.argv) > 1:
        from pathlib import Path

        Path(sys.argv[1]).write_text(text)
