"""Lightning callbacks (thin: the math lives in plain-torch packages)."""

from scatterlab.callbacks.analysis import AnalysisCallback

__all__ = ["AnalysisCallback"]
