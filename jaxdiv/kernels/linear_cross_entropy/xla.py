"""The plain fused loss: one matmul to the full logits, then the two-pass cross-entropy.

Fast for small vocabularies; it holds [tokens, vocab] float32 logits and their gradient.
"""

from __future__ import annotations

from jaxdiv.kernels.cross_entropy import xla
from jaxdiv.kernels.linear_cross_entropy.chunked_xla import block_logits


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None):
  return xla.cross_entropy(block_logits(hidden, weight, vd), labels, valid,
                           label_smoothing=label_smoothing, z_loss=z_loss)
