"""Thin LightningModules on top of the plain torch models."""

from scatterlab.modules.classification import ClassificationModule

__all__ = ["ClassificationModule"]
