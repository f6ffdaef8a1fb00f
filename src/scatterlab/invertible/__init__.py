"""Invertible networks and information (issue 24).

- `irevnet`: i-RevNet (Jacobsen, Smeulders & Oyallon 2018), bijective and injective, with
  `inverse()`; `reversible`: the memory-saving backward that recomputes activations.
- `ib`: the optimal information-bottleneck curve of a known p(x, y) (iterative IB).
- `gradients`: per-layer gradient signal-to-noise (drift / diffusion phases of SGD).
"""

from scatterlab.invertible.irevnet import IRevBlock, IRevNet, squeeze, unsqueeze
from scatterlab.invertible.reversible import reversible_stack

__all__ = ["IRevBlock", "IRevNet", "reversible_stack", "squeeze", "unsqueeze"]
