"""The plain fused loss: one matmul to the full logits, then the two-pass cross-entropy.

Fast for small vocabularies; it holds [tokens, vocab] float32 logits and their gradient. With
`axis_name`, the local [tokens, vocab / k] logits go through the reference's sharded
cross-entropy (collectives on [tokens] vectors, gradient by autodiff).
"""

from __future__ import annotations

from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import reference as ce_reference
from jaxdiv.kernels.cross_entropy import xla


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  z = _softcap.apply(lb.logits(hidden, weight, vd), softcap)
  if axis_name is not None:
    return ce_reference.cross_entropy(z, labels, valid, label_smoothing=label_smoothing,
                                      z_loss=z_loss, axis_name=axis_name)
  return xla.cross_entropy(z, labels, valid, label_smoothing=label_smoothing, z_loss=z_loss)
