"""The truth for the fused loss: materialise the logits, then the reference cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import reference


def logits(hidden, weight, *, vd: bool):
  """hidden @ weight ([d, vocab]) or hidden @ weight.T ([vocab, d]), accumulated in float32+.

  d weight comes from the hidden states' finite entries: a token whose hidden state is not
  finite gets no gradient (its loss is NaN or +inf: a lost row, or it is masked), and its row
  would add 0 * NaN to the whole head (`_linear_blocks.logits`, the same rule)."""
  dtype = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  w = weight.T if vd else weight
  return _product(hidden.astype(dtype), w.astype(dtype))


@jax.custom_jvp
def _product(h, w):
  return jnp.dot(h, w, precision="highest")


@_product.defjvp
def _product_jvp(primals, tangents):
  (h, w), (dh, dw) = primals, tangents
  finite_h = jnp.where(jnp.isfinite(h), h, 0)
  return _product(h, w), _product(dh, w) + _product(finite_h, dw)


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  del block_size
  z = _softcap.apply(logits(hidden, weight, vd=vd), softcap)
  return reference.cross_entropy(z, labels, valid, label_smoothing=label_smoothing,
                                 z_loss=z_loss, axis_name=axis_name)
