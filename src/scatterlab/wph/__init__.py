"""Wavelet phase harmonics: moments of stationary 2D fields and microcanonical synthesis."""

from scatterlab.wph.operator import CLASSES, INDEX_COLUMNS, WPHOp, check_fields, require_square

__all__ = ["CLASSES", "INDEX_COLUMNS", "WPHOp", "check_fields", "require_square"]
