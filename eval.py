"""Evaluate a checkpoint: `python eval.py ckpt_path=PATH` (see README)."""

from scatterlab.cli import evaluate

if __name__ == "__main__":
    evaluate()
