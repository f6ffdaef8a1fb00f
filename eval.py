"""Evaluate a checkpoint: `python eval.py ckpt_path=PATH` (see README)."""

from scatterlab.eval import main

if __name__ == "__main__":
    main()
