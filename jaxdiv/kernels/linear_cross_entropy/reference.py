"""The truth for the fused loss: materialise the logits, then the reference cross-entropy."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import reference


def logits(hidden, weight, *, vd: bool):
  """hidden @ weight ([d, vocab]) or hidden @ weight.T ([vocab, d]), accumulated in float32+.

  d weight comes from the hidden states' finite entries: a token whose hidden state is not
  finite has no gradient (its loss is NaN: a lost row, or it is masked), and its row would add
  0 * NaN to the whole head. The value is the plain product (`2a - a = a` exactly)."""
  dtype = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  h, w = hidden.astype(dtype), (weight.T if vd else weight).astype(dtype)
  dot = lambda a, b: jnp.dot(a, b, precision="highest")
  h_w = lax.stop_gradient(jnp.where(jnp.isfinite(h), h, 0))
  plain = dot(h, lax.stop_gradient(w))
  return (plain + dot(h_w, w)) - lax.stop_gradient(dot(h_w, w))


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  del block_size
  z = _softcap.apply(logits(hidden, weight, vd=vd), softcap)
  return reference.cross_entropy(z, labels, valid, label_smoothing=label_smoothing,
                                 z_loss=z_loss, axis_name=axis_name)
