"""Thin LightningModules for the random-network theory experiments (`train=false` runs).

The convention: a theory experiment is an ordinary `train.py` run with `train: false` and
`data: null`. The module brings a one-batch `test_dataloader`; its test stage computes (plain
torch in `scatterlab.theory`), and at the end of the test epoch it writes `<name>.json` (every
array) and PNG plots into `output_dir` (the Hydra run dir), and returns its scalar results from
`final_metrics()`, which train.py merges into metrics.json. So the runs share the config tree,
the run directory layout, the env record and the multirun/report machinery of training runs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from scatterlab.data.base import device_batches
from scatterlab.errors import ConfigError
from scatterlab.modules.classification import ClassificationModule
from scatterlab.ranges import NonNegative, Positive, PositiveInt, Range
from scatterlab.theory import MeanField, jacobian_spectrum, plots, propagate_circle, propagate_pair
from scatterlab.theory.activations import check_depth, get_phi
from scatterlab.theory.jacobian import spectrum_theory

log = logging.getLogger("scatterlab")

Device = Literal["auto", "cpu", "cuda"]


def _plain(x: Any) -> Any:
    """Tensors, arrays and omegaconf nodes as JSON-ready python values (nan/inf as strings)."""
    if OmegaConf.is_config(x):
        x = OmegaConf.to_container(x, resolve=True)
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, float | np.floating) and not math.isfinite(float(x)):
        return str(float(x))
    if isinstance(x, np.floating | np.integer):
        return x.item()
    return x


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"module.device={device!r} is unknown: use auto, cpu or cuda")
    return device


class TheoryModule(L.LightningModule):
    """Base of the theory runs: nothing to fit; `compute()` runs at the end of the test epoch.

    name: file stem of the JSON results (`<name>.json`) and the plots (`<name>_*.png`).
    output_dir: where they go (the run dir, `${paths.output_dir}`); null: nowhere.
    device: auto | cpu | cuda, for the simulations.
    """

    def __init__(self, name: str, output_dir: str | None = None, device: Device = "auto") -> None:
        super().__init__()
        self.name, self.output_dir = name, output_dir
        self.sim_device = _device(device)
        self.metrics: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def test_dataloader(self) -> DataLoader:
        # one dummy batch: the test loop must run once so that on_test_epoch_end fires
        return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        return None

    def configure_optimizers(self) -> None:
        return None

    def on_test_epoch_end(self) -> None:
        start = time.perf_counter()
        self.compute()
        self.metrics["compute_time_s"] = time.perf_counter() - start
        if self.output_dir is not None:
            out = Path(self.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{self.name}.json"
            path.write_text(json.dumps(_plain({**self.results, "metrics": self.metrics}), indent=1))
            log.info(f"{self.name}: results in {path}")

    def compute(self) -> None:
        raise NotImplementedError

    def plot_path(self, suffix: str) -> Path | None:
        return (
            None if self.output_dir is None else Path(self.output_dir) / f"{self.name}_{suffix}.png"
        )

    def final_metrics(self) -> dict[str, float]:
        return dict(self.metrics)


class PhaseDiagramModule(TheoryModule):
    """chi_1, xi_c, xi_q, q*, c* on a (sigma_w^2, sigma_b^2) grid and the critical line.

    phi: the non-linearity; sw2 / sb2: [min, max] ranges (variances); grid: [n_sw2, n_sb2];
    report_sb2: sigma_b^2 values at which the critical sigma_w^2 goes to metrics.json.
    """

    def __init__(
        self,
        phi: str = "tanh",
        sw2: Annotated[Sequence[Positive], Range(ge=2, le=2)] = (0.5, 4.0),
        sb2: Annotated[Sequence[NonNegative], Range(ge=2, le=2)] = (0.0, 0.25),
        grid: Annotated[Sequence[Annotated[int, Range(ge=2)]], Range(ge=2, le=2)] = (100, 100),
        report_sb2: Sequence[NonNegative] = (0.01, 0.05, 0.1, 0.25),
        name: str = "meanfield_phase_diagram",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.mf = MeanField(phi)
        self.sw2_range, self.sb2_range = tuple(map(float, sw2)), tuple(map(float, sb2))
        self.grid, self.report_sb2 = tuple(map(int, grid)), [float(b) for b in report_sb2]

    def compute(self) -> None:
        sw2 = torch.linspace(*self.sw2_range, self.grid[0], dtype=torch.float64)[:, None]
        sb2 = torch.linspace(*self.sb2_range, self.grid[1], dtype=torch.float64)[None, :]
        t0 = time.perf_counter()
        pd = self.mf.phase_diagram(sw2, sb2)
        self.metrics["phase_diagram_time_s"] = time.perf_counter() - t0
        qs = torch.logspace(-6, 2, 400, dtype=torch.float64)
        line_w, line_b = self.mf.critical_line(qs)
        keep = torch.isfinite(line_b) & (line_b <= self.sb2_range[1])
        line = (line_w[keep].numpy(), line_b[keep].numpy())
        crit = self.mf.critical_sw2(torch.tensor(self.report_sb2, dtype=torch.float64))
        for b, w in zip(self.report_sb2, crit.tolist(), strict=True):
            self.metrics[f"critical_sw2/sb2={b:g}"] = w
        self.metrics["critical_sw2/sb2=0"] = float(self.mf.critical_sw2(torch.tensor(0.0)))
        self.metrics["chaotic_fraction"] = float((pd["chi1"] > 1).double().mean())
        self.results = {
            "phi": self.mf.phi.name,
            "sw2": sw2[:, 0],
            "sb2": sb2[0],
            **{k: v for k, v in pd.items() if k not in ("sw2", "sb2")},
            "critical_line": {"q_star": qs[keep], "sw2": line[0], "sb2": line[1]},
        }
        if (path := self.plot_path("xi_c")) is not None:
            plots.phase_diagram(pd, line, path, self.mf.phi.name)


class MeanFieldSimulationModule(TheoryModule):
    """q^l, c^l theory vs random networks of several widths; the propagated circle.

    phases: {name: sigma_w^2} at sigma_b^2 = sb2 (a null value: the critical sigma_w^2);
    widths / seeds / depth / q1 / c1: the pair simulations; circle_width, circle_depth,
    n_angles, pca_layers: the circle (Poole et al. Fig. 3 and 4).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "phi not in ('relu', 'hardtanh', 'modulus')",
            "the circle's curvature needs a twice differentiable real phi: use module.phi=tanh, "
            "erf or linear",
        ),
    )

    def __init__(
        self,
        phi: str = "tanh",
        sb2: NonNegative = 0.09,
        phases: dict[str, Positive | None] | None = None,
        widths: Annotated[Sequence[PositiveInt], Range(ge=2)] = (100, 300, 1000, 2000),
        seeds: PositiveInt = 4,
        depth: Annotated[int, Range(ge=2)] = 10,
        q1: Positive = 1.0,
        c1: Annotated[float, Range(ge=-1, le=1)] = 0.5,
        circle_width: PositiveInt = 1000,
        circle_depth: PositiveInt = 15,
        n_angles: Annotated[int, Range(ge=3)] = 256,
        pca_layers: Sequence[PositiveInt] = (1, 5, 10, 15),
        name: str = "meanfield_vs_simulation",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.mf = MeanField(phi)
        self.phi = get_phi(phi)
        phases = {"ordered": 1.69, "critical": None, "chaotic": 16.0} if phases is None else phases
        phases = OmegaConf.to_container(phases) if OmegaConf.is_config(phases) else dict(phases)
        self.sb2 = float(sb2)
        self.phases = {
            k: float(self.mf.critical_sw2(torch.tensor(self.sb2))) if v is None else float(v)
            for k, v in phases.items()
        }
        self.widths, self.seeds = [int(w) for w in widths], int(seeds)
        self.depth, self.q1, self.c1 = check_depth(depth, "module.depth"), float(q1), float(c1)
        self.circle_width, self.n_angles = int(circle_width), int(n_angles)
        self.circle_depth = check_depth(circle_depth, "module.circle_depth")
        self.pca_layers = tuple(int(i) for i in pca_layers if 1 <= int(i) <= self.circle_depth)

    def compute(self) -> None:
        dev = self.sim_device
        curves, deviations, circle_curves, pcas, phases = {}, {}, {}, {}, {}
        for name, sw2 in self.phases.items():
            chi1 = float(self.mf.chi1(sw2, self.sb2))
            q_th = self.mf.q_trajectory(self.q1, sw2, self.sb2, self.depth)
            c_th = self.mf.c_trajectory(self.q1, self.c1, sw2, self.sb2, self.depth)
            dq, dc = [], []
            for width in self.widths:
                runs = [
                    propagate_pair(
                        self.phi,
                        sw2,
                        self.sb2,
                        width,
                        self.depth,
                        self.q1,
                        self.c1,
                        seed=s,
                        device=dev,
                    )
                    for s in range(self.seeds)
                ]
                q = torch.stack([r["q"] for r in runs]).cpu()
                c = torch.stack([r["c"] for r in runs]).cpu()
                # RMS over seeds and layers 2..L (layer 1 is the input, exact by construction)
                dq.append(float((((q - q_th) / q_th)[:, 1:] ** 2).mean().sqrt()))
                dc.append(float(((c - c_th)[:, 1:] ** 2).mean().sqrt()))
            curves[name] = {
                "width": self.widths[-1],
                "q_theory": q_th,
                "q_sim": q.mean(0),
                "q_sim_se": q.std(0) / math.sqrt(len(q)),
                "c_theory": c_th,
                "c_sim": c.mean(0),
                "c_sim_se": c.std(0) / math.sqrt(len(c)),
            }
            deviations[name] = {"q": dq, "c": dc}
            logw = np.log(self.widths)
            for key in ("q", "c"):
                slope = float(np.polyfit(logw, np.log(deviations[name][key]), 1)[0])
                self.metrics[f"deviation_slope/{name}/{key}"] = slope
            circ = propagate_circle(
                self.phi,
                sw2,
                self.sb2,
                self.circle_width,
                self.circle_depth,
                self.n_angles,
                seed=0,
                pca_layers=self.pca_layers,
                device=dev,
            )
            th = self.mf.curvature_trajectory(sw2, self.sb2, self.circle_depth)
            circle_curves[name] = {
                "g_theory": th["g_bar"],
                "g_sim": circ["g_bar"].cpu(),
                "kappa_theory": th["kappa_bar"],
                "kappa_sim": circ["kappa_bar"].cpu(),
                "length_sim": circ["length"].cpu(),
            }
            pcas[name] = {k: v.cpu() for k, v in circ["pca"].items()}
            last = -1
            self.metrics[f"chi1/{name}"] = chi1
            self.metrics[f"kappa_rel_err/{name}"] = float(
                (circ["kappa_bar"][last].cpu() / th["kappa_bar"][last] - 1).abs()
            )
            self.metrics[f"g_rel_err/{name}"] = float(
                (circ["g_bar"][last].cpu() / th["g_bar"][last] - 1).abs()
            )
            phases[name] = {
                "sw2": sw2,
                "sb2": self.sb2,
                "chi1": chi1,
                "xi_c": float(self.mf.xi_c(sw2, self.sb2)),
            }
        self.results = {
            "phi": self.phi.name,
            "phases": phases,
            "widths": self.widths,
            "trajectories": curves,
            "deviation": deviations,
            "circle": circle_curves,
            "pca": {n: {str(k): v for k, v in p.items()} for n, p in pcas.items()},
        }
        if self.output_dir is not None:
            plots.trajectories(curves, self.plot_path("trajectories"))
            plots.deviation(self.widths, deviations, self.plot_path("deviation"))
            plots.curvature(circle_curves, self.plot_path("curvature"))
            if self.pca_layers:
                plots.circles(pcas, self.plot_path("circles"))


class JacobianSpectrumModule(TheoryModule):
    """Singular values of J for phis x weights x depths at criticality, theory beside them.

    phis: non-linearities, each at its critical point: linear (sigma_w^2 = 1, sigma_b = 0),
    relu (2, 0), others on the critical line at q* = module.q_star (tanh: 1/64 near isometry).
    """

    def __init__(
        self,
        phis: Sequence[str] = ("linear", "relu", "tanh"),
        weights: Sequence[Literal["gaussian", "orthogonal"]] = ("gaussian", "orthogonal"),
        depths: Sequence[PositiveInt] = (2, 8, 32, 128),
        width: PositiveInt = 400,
        seeds: PositiveInt = 2,
        q_star: Positive = 1 / 64,
        name: str = "jacobian_spectrum",
        output_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(name, output_dir, device)
        self.phis = [get_phi(p).name for p in phis]
        self.weights = list(weights)
        self.depths = [check_depth(int(d), "module.depths") for d in depths]
        self.width, self.seeds, self.q_star = int(width), int(seeds), float(q_star)

    def critical_point(self, phi: str) -> tuple[float, float]:
        if phi == "linear":
            return 1.0, 0.0
        if phi == "relu":
            return 2.0, 0.0
        sw2, sb2 = MeanField(phi).critical_line(torch.tensor(self.q_star, dtype=torch.float64))
        return float(sw2), float(sb2)

    def compute(self) -> None:
        rows = []
        for phi in self.phis:
            sw2, sb2 = self.critical_point(phi)
            for weights in self.weights:
                for depth in self.depths:
                    t0 = time.perf_counter()
                    meas = jacobian_spectrum(
                        phi,
                        sw2,
                        sb2,
                        self.width,
                        depth,
                        weights,
                        self.seeds,
                        device=self.sim_device,
                    )
                    th = spectrum_theory(phi, sw2, sb2, depth, weights)
                    rows.append(
                        {
                            "phi": phi,
                            "weights": weights,
                            "depth": depth,
                            "sw2": sw2,
                            "sb2": sb2,
                            "m1_measured": meas["m1"],
                            "m1_se": meas["m1_se"],
                            "m1_theory": th["m1"],
                            "var_measured": meas["var"],
                            "var_se": meas["var_se"],
                            "var_theory": th["var"],
                            "time_s": time.perf_counter() - t0,
                            "singular_values": meas["singular_values"].cpu(),
                        }
                    )
                    key = f"{phi}_{weights}_L{depth}"
                    self.metrics[f"var_measured/{key}"] = meas["var"]
                    self.metrics[f"var_theory/{key}"] = th["var"]
        self.results = {"width": self.width, "seeds": self.seeds, "spectra": rows}
        if (path := self.plot_path("densities")) is not None:
            plots.spectra(rows, path)


class TrainabilityModule(ClassificationModule):
    """ClassificationModule for the trainability study: after fitting, adds the theory's depth
    scale and the accuracy on the whole training set (final weights) to metrics.json.

    The network must be `scatterlab.models.MLP`; its sigma_w, sigma_b and activation give
    xi_c (`xi_c`, `trainable_depth_6xi` = 6 xi_c, `depth`).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        num_classes: Annotated[int, Range(ge=2)] = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, optimizer, scheduler, num_classes, **kwargs)
        if not hasattr(net, "sigma_w") or not hasattr(net, "layers"):
            raise ConfigError("module=theory_trainability needs model=mlp")
        act = type(net.layers[0].act).__name__.lower()
        names = {
            "tanh": "tanh",
            "relu": "relu",
            "erf": "erf",
            "hardtanh": "hardtanh",
            "identity": "linear",
        }
        if act not in names:
            raise ConfigError(f"model.activation {act!r} has no mean-field theory here")
        mf = MeanField(names[act])
        sw2, sb2 = float(net.sigma_w) ** 2, float(net.sigma_b) ** 2
        xi = float(mf.xi_c(sw2, sb2))
        self.theory = {
            "xi_c": xi,
            "trainable_depth_6xi": 6 * xi,
            "depth": len(net.layers),
            "chi1": float(mf.chi1(sw2, sb2)),
            "sigma_w2": sw2,
        }
        self._train_acc: float | None = None

    def on_train_end(self) -> None:
        # accuracy of the final weights on the whole training set (not the epoch's running mean)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        correct = total = 0
        was_training = self.training
        self.eval()
        with torch.no_grad():
            # normalised batches exactly as training sees them (the datamodule's transfer hook)
            for x, y in device_batches(dm, "train", None, 0, self.device):
                correct += int((self(x).argmax(-1) == y).sum())
                total += len(y)
        self.train(was_training)
        self._train_acc = correct / max(total, 1)

    def final_metrics(self) -> dict[str, float]:
        out = dict(self.theory)
        if self._train_acc is not None:
            out["train_acc_final"] = self._train_acc
        return out
