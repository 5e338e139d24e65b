"""The truth for the fused loss: materialise the logits, then the reference cross-entropy."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiv.kernels.cross_entropy import reference


def logits(hidden, weight, *, vd: bool):
  """hidden @ weight ([d, vocab]) or hidden @ weight.T ([vocab, d]), accumulated in float32+."""
  dtype = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  w = weight.T if vd else weight
  return jnp.dot(hidden.astype(dtype), w.astype(dtype), precision="highest")


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None):
  del block_size
  return reference.cross_entropy(logits(hidden, weight, vd=vd), labels, valid,
                                 label_smoothing=label_smoothing, z_loss=z_loss)
