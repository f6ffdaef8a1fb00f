"""Train: `python train.py experiment=cifar_scattering` (see README; `--help` lists the options)."""

from scatterlab.cli import train

if __name__ == "__main__":
    train()
