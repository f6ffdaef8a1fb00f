"""Train: `python train.py experiment=cifar_scattering` (see README)."""

from scatterlab.train import main

if __name__ == "__main__":
    main()
