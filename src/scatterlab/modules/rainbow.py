"""RainbowModule: train (or load) a learned scattering network, then resample it.

Fit: the classification training of ``ClassificationModule`` (skipped with ``train=false``
when ``source_ckpts`` gives trained networks). Test: logs the trained network's test/acc,
then at the end of the test epoch runs the rainbow protocol (``scatterlab.rainbow``):
weight covariances C_j of the resampled layers (from one or several source networks),
``num_samples`` Gaussian rainbow networks with their alignment errors per layer, the
"rainbow + trained classifier" accuracy (P_J and the classifier retrained), the random-rotation
control, and optionally the clipping curve of one layer (``rainbow=false`` skips all this).
With ``reference_ckpt`` (a wider trained network of the same depth) it also measures the
convergence with width: the alignment error of this network's representations onto the
reference's. Results are logged under one name each (``trained_acc``, ``alignment_error/...``),
so they reach metrics.json and the loggers once; PNG plots go to ``output_dir`` and, when a
WandbLogger is present, to wandb.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from scatterlab.data.base import device_batches
from scatterlab.errors import CheckpointError, ConfigError
from scatterlab.modules.classification import ClassificationModule
from scatterlab.rainbow import network as rn
from scatterlab.rainbow.weights import gaussianity, spectrum
from scatterlab.ranges import NonNegative, NonNegativeInt, PositiveInt, Range, Seed
from scatterlab.utils import load_checkpoint, stored_config

log = logging.getLogger("scatterlab")


def load_network_weights(net: nn.Module, path: str) -> None:
    """Load the `net.` weights of a scatterlab checkpoint into net, with clear errors."""
    ckpt = load_checkpoint(path)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise CheckpointError(f"{path} holds no network weights (no 'net.' entries)")
    own = net.state_dict()
    saved = ckpt.get("scatterlab_config", {}).get("model")
    keys = ("widths", "width", "L", "skip", "in_channels", "input_size", "complex_projection")
    hint = (
        " It was trained with "
        + " ".join(f"model.{k}={saved[k]}" for k in keys if k in saved).replace(" ", ",", 0)
        if saved
        else ""
    )
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks the layer(s) {', '.join(missing[:4])} of the configured model: it "
            f"is a checkpoint of another architecture; use the model settings it was trained "
            f"with.{hint}"
        )
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"{path} is a checkpoint of another architecture: {k} has shape "
                f"{tuple(state[k].shape)} there but {tuple(v.shape)} in the configured model; "
                f"use the model settings it was trained with.{hint}"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise CheckpointError(
            f"{path} has layer(s) {', '.join(extra[:4])} that the configured model lacks: it is "
            f"a checkpoint of another architecture.{hint}"
        )
    net.load_state_dict(state)


class RainbowModule(ClassificationModule):
    """ClassificationModule whose test stage also runs the rainbow protocol.

    source_ckpts: trained checkpoints (scatterlab train.py); the first is the reference
      network (loaded into `net`), all give the covariances (aligned to their mean network).
    layers: blocks whose P_j are resampled: indices, names blocks.{j}.proj, 'all' or
      'all_but_last' (the reference's CIFAR protocol, P_1..P_{J-1}).
    method: 'gaussian' (rainbow) or 'transport' (sanity check: trained weights transported).
    num_samples: rainbow networks drawn; stats_samples: training images used for the
      alignments and statistics (null: all); test_samples: test images of the rainbow
      evaluations (null: all; test/acc always uses the whole test set);
      retrain_epochs / retrain_lr: the "rainbow + trained classifier" retraining of P_J and
      the classifier (0 skips it).
    clip_layer / clip_ks: clipping curve (accuracy vs k) of one block, null to skip.
    rotation_control: also resample with random rotations instead of the alignments.
    rainbow: run the resampling protocol above at test time (false: only test/acc and, with
      reference_ckpt, the width alignment).
    reference_ckpt: a trained checkpoint of a wider network of the same depth; the test stage
      then logs width_alignment_error/{layer} of this network onto it (on test_samples test
      images), the paper's convergence-with-width measure, and reference_width; beside it
      cka/{layer}, the linear CKA of the same representations on the first `cka_images` of
      those test images (0: skip).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ClassificationModule.CONFIG_CHECKS,
        ("cka_images != 1", "CKA needs 2 images or more: set module.cka_images=0 (skip) or >= 2"),
    )

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: Annotated[int, Range(ge=2)] = 10,
        source_ckpts: Sequence[str] | None = None,
        layers: Any = "all_but_last",
        method: Literal["gaussian", "transport"] = "gaussian",
        num_samples: PositiveInt = 1,
        stats_samples: PositiveInt | None = None,
        test_samples: PositiveInt | None = None,
        retrain_epochs: NonNegativeInt = 5,
        retrain_lr: NonNegative = 0.01,
        clip_layer: NonNegativeInt | None = None,
        clip_ks: Sequence[PositiveInt] = (1, 5, 10, 20, 40),
        rotation_control: bool = True,
        rainbow_seed: Seed = 0,
        output_dir: str | None = None,
        rainbow: bool = True,
        reference_ckpt: str | None = None,
        cka_images: NonNegativeInt = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, optimizer, scheduler, num_classes, **kwargs)
        # Plain containers in the saved hyper-parameters: checkpoints then load with
        # torch.load(weights_only=True), which refuses omegaconf's ListConfig.
        for hp in (self.hparams, getattr(self, "_hparams_initial", {})):
            for k, v in list(hp.items()):
                if OmegaConf.is_config(v):
                    hp[k] = OmegaConf.to_object(v)
        self.net = rn.check_network(net)
        if method not in ("gaussian", "transport"):
            raise ConfigError(f"module.method={method!r} is unknown: use gaussian or transport")
        self.layers = rn.parse_layers(
            self.net, OmegaConf.to_object(layers) if OmegaConf.is_config(layers) else layers
        )
        if clip_layer is not None and not 0 <= clip_layer < len(self.net.blocks):
            raise ConfigError(
                f"module.clip_layer={clip_layer} is no block: use 0..{len(self.net.blocks) - 1}"
            )
        self.rainbow_cfg = dict(
            method=method,
            num_samples=num_samples,
            stats_samples=stats_samples,
            test_samples=test_samples,
            retrain_epochs=retrain_epochs,
            retrain_lr=retrain_lr,
            clip_layer=clip_layer,
            clip_ks=list(clip_ks),
            rotation_control=rotation_control,
            seed=rainbow_seed,
        )
        self.output_dir = output_dir
        self.rainbow = rainbow
        # in a list, not an attribute: a submodule would go into every checkpoint and optimizer
        self._reference: list[nn.Module] = []
        self.reference_width: float | None = None
        if cka_images < 0 or cka_images == 1:
            raise ConfigError(f"module.cka_images={cka_images}: use 0 (skip) or >= 2 images")
        self.cka_images = cka_images
        if reference_ckpt is not None:
            ref, self.reference_width = load_reference(reference_ckpt)
            self._reference.append(ref)
        self.extra_nets: list[nn.Module] = []
        for i, path in enumerate(source_ckpts or []):
            if i == 0:
                load_network_weights(self.net, path)
            else:
                other = _clone_architecture(self.net)
                load_network_weights(other, path)
                self.extra_nets.append(other)
        self._final: dict[str, float] = {}

    # ---- the rainbow protocol at the end of testing ---------------------------------------
    def _batches(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """Normalized (x, y) batches on the device: a seeded random subset of
        stats_samples training / test_samples test images (all when null)."""
        limit = self.rainbow_cfg["stats_samples" if split == "train" else "test_samples"]
        seed = self.rainbow_cfg["seed"] + (split == "train")
        return device_batches(self.trainer.datamodule, split, limit, seed, self.device)

    def on_test_epoch_end(self) -> None:
        self._final = {}
        with torch.inference_mode(False), torch.no_grad():
            test = self._batches("test")
            if self.rainbow:
                self._final.update(self.run_rainbow(self._batches("train"), test))
            if self._reference:
                self._final.update(self.run_width_alignment(test))
        if self._final:
            # one name per value: the same keys in metrics.json (through callback_metrics and
            # final_metrics) and in the loggers
            self.log_dict(self._final, sync_dist=False)

    def run_width_alignment(self, test: list) -> dict[str, float]:
        """width_alignment_error/{layer} of this network onto the reference network, and
        cka/{layer} (linear CKA) of the same representations."""
        ref = self._reference[0].to(self.device).eval()
        als = rn.width_alignment(ref, self.net.eval(), test)
        m = {f"width_alignment_error/{name}": float(al.error) for name, al in als.items()}
        if self.cka_images:
            cka = rn.width_cka(ref, self.net, test, self.cka_images)
            m.update({f"cka/{name}": v for name, v in cka.items()})
        if self.reference_width is not None:
            m["reference_width"] = float(self.reference_width)
        return m

    def run_rainbow(self, train: list, test: list) -> dict[str, float]:
        """The whole protocol on (x, y) batch lists; returns the flat metrics."""
        cfg = self.rainbow_cfg
        g = torch.Generator().manual_seed(cfg["seed"])
        m: dict[str, float] = {"trained_acc": rn.evaluate(self.net, test)}
        # The reference with exact statistics on the same data as the resampled networks get
        # (its running averages lag behind the last weights): alignment errors then compare
        # like with like, and method=transport gives back this accuracy.
        ref = copy.deepcopy(self.net).eval()
        rn.reestimate_statistics(ref, train)
        m["trained_acc_exact_stats"] = rn.evaluate(ref, test)
        nets = [ref, *[n.to(self.device).eval() for n in self.extra_nets]]
        for other in nets[1:]:
            rn.reestimate_statistics(other, train)
        covs = rn.layer_covariances(nets, self.layers, train)
        self._covs = covs
        if len(nets) > 1:  # with C from this network alone its whitened weights are white
            for j, cov in covs.items():
                for k, v in gaussianity(ref.blocks[j].proj.weight, cov).items():
                    m[f"gaussianity/blocks.{j}.proj/{k}"] = v
        accs, accs_cls, errors = [], [], {}
        for s in range(cfg["num_samples"]):
            new, rep = rn.resample(ref, covs, train, cfg["method"], g)
            accs.append(rn.evaluate(new, test))
            for name, e, r2 in zip(rep.names, rep.errors, rep.r2, strict=True):
                errors.setdefault(name, []).append((e, r2))
            if cfg["retrain_epochs"] > 0:
                head = rn.retrain_head(
                    new, train, cfg["retrain_epochs"], cfg["retrain_lr"], generator=g
                )
                accs_cls.append(rn.evaluate(head, test))
            log.info(f"rainbow sample {s}: acc {accs[-1]:.4f}")
        t = torch.tensor(accs)
        m["rainbow_acc"] = float(t.mean())
        m["rainbow_acc_std"] = float(t.std()) if len(accs) > 1 else 0.0
        if accs_cls:
            m["rainbow_trained_classifier_acc"] = float(torch.tensor(accs_cls).mean())
        for name, vals in errors.items():
            m[f"alignment_error/{name}"] = float(sum(e for e, _ in vals) / len(vals))
            m[f"alignment_r2/{name}"] = float(sum(r for _, r in vals) / len(vals))
        if cfg["rotation_control"]:
            rot, _ = rn.resample(ref, covs, train, "rotation", g)
            m["rotation_control_acc"] = rn.evaluate(rot, test)
        if cfg["clip_layer"] is not None:
            j = cfg["clip_layer"]
            cov = covs.get(j)
            if cov is None:
                cov = rn.layer_covariances(nets, [j], train)[j]
            d = cov.shape[0]
            for k in sorted({min(k, d) for k in cfg["clip_ks"]} | {d}):
                m[f"clip_acc/k{k}"] = rn.evaluate(rn.clip_layer(ref, j, cov, k, train), test)
        m["num_resampled_layers"] = len(self.layers)
        self._plots(m, covs)
        return m

    def _plots(self, m: dict[str, float], covs: dict[int, Tensor]) -> None:
        if not self.trainer.is_global_zero or not self.output_dir:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for j, c in covs.items():
            vals = spectrum(c)[0]
            ax.semilogy(torch.arange(1, len(vals) + 1), vals / vals[0], label=f"C_{j + 1}")
        ax.set(xlabel="rank m", ylabel="eigenvalue / top", title="weight covariance spectra")
        ax.legend(fontsize=7)
        paths["covariance_spectra"] = out / "rainbow_spectra.png"
        fig.tight_layout()
        fig.savefig(paths["covariance_spectra"], dpi=120)
        plt.close(fig)

        names = [k.split("/", 1)[1] for k in m if k.startswith("alignment_error/")]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(range(len(names)), [m[f"alignment_error/{n}"] for n in names], "o-")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        width = getattr(self.net, "widths", [0])[0]
        ax.set(ylabel="relative alignment error", title=f"alignment error (first width {width})")
        paths["alignment_error"] = out / "rainbow_alignment_error.png"
        fig.tight_layout()
        fig.savefig(paths["alignment_error"], dpi=120)
        plt.close(fig)

        keys = ["trained_acc", "rainbow_acc", "rainbow_trained_classifier_acc"]
        keys += ["rotation_control_acc"]
        keys = [k for k in keys if k in m]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(range(len(keys)), [100 * m[k] for k in keys])
        ax.set_xticks(range(len(keys)), [k.replace("_acc", "") for k in keys], fontsize=7)
        ax.set(ylabel="test accuracy (%)", title="accuracy at this width")
        paths["accuracy"] = out / "rainbow_accuracy.png"
        fig.tight_layout()
        fig.savefig(paths["accuracy"], dpi=120)
        plt.close(fig)

        clip = sorted((int(k.split("/k")[1]), v) for k, v in m.items() if k.startswith("clip_acc"))
        if clip:
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.semilogx([k for k, _ in clip], [100 * v for _, v in clip], "o-")
            ax.set(
                xlabel="k (top eigenvectors kept)",
                ylabel="test accuracy (%)",
                title=f"clipping P_{self.rainbow_cfg['clip_layer'] + 1}",
            )
            paths["clipping"] = out / "rainbow_clipping.png"
            fig.tight_layout()
            fig.savefig(paths["clipping"], dpi=120)
            plt.close(fig)
        for lg in self.loggers:
            if type(lg).__name__ == "WandbLogger":
                for key, p in paths.items():
                    lg.log_image(key=f"rainbow/{key}", images=[str(p)])

    def final_metrics(self) -> dict[str, float]:
        """The rainbow metrics of the last test run (unprefixed, for metrics.json)."""
        return dict(self._final)


def load_reference(path: str) -> tuple[nn.Module, float | None]:
    """(network, its model.width) of a train.py checkpoint, built from the config it stores."""
    from hydra.utils import instantiate

    ckpt = load_checkpoint(path)
    model_cfg = stored_config(ckpt, path).get("model") if "scatterlab_config" in ckpt else None
    if not model_cfg:
        raise CheckpointError(
            f"{path} stores no run config (scatterlab_config): module.reference_ckpt needs a "
            "checkpoint written by train.py"
        )
    net = rn.check_network(instantiate(model_cfg))
    load_network_weights(net, path)
    return net.eval(), model_cfg.get("width")


def _clone_architecture(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net)
