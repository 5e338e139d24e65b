"""The truth for the fused loss: materialise the logits, then the reference cross-entropy."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import reference


def logits(hidden, weight, *, vd: bool):
  """hidden @ weight ([d, vocab]) or hidden @ weight.T ([vocab, d]), accumulated in float32+."""
  dtype = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  w = weight.T if vd else weight
  return jnp.dot(hidden.astype(dtype), w.astype(dtype), precision="highest")


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  del block_size
  z = _softcap.apply(logits(hidden, weight, vd=vd), softcap)
  return reference.cross_entropy(z, labels, valid, label_smoothing=label_smoothing,
                                 z_loss=z_loss, axis_name=axis_name)
