"""Error type used by the WSGM code.

Resolves to ``scatterlab.errors.ConfigError`` when the foundation provides it, so callers and
tests can catch either name; the local fallback only exists so this package imports on its own.
"""

from __future__ import annotations

try:  # pragma: no cover - depends on the foundation being present
    from scatterlab.errors import ConfigError
except ImportError:  # pragma: no cover

    class ConfigError(ValueError):  # type: ignore[no-redef]
        """A user configuration mistake (fallback until scatterlab.errors exists)."""


__all__ = ["ConfigError"]
