"""Thin LightningModules on top of the plain torch models."""

from scatterlab.modules.classification import ClassificationModule
from scatterlab.modules.wph import WPHModule  # noqa: F401

__all__ = ["ClassificationModule"]
