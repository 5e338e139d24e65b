"""The truth for the fused loss: materialise the logits, then the reference cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _numerics
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import reference


def logits(hidden, weight, *, vd: bool):
  """hidden @ weight ([d, vocab]) or hidden @ weight.T ([vocab, d]), accumulated in float32+."""
  dtype = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  w = weight.T if vd else weight
  return jnp.dot(hidden.astype(dtype), w.astype(dtype), precision="highest")


def sharded_cross_entropy(z: jax.Array, labels: jax.Array, valid: jax.Array, *, axis_name,
                          label_smoothing: float = 0.0, z_loss: float = 0.0) -> jax.Array:
  """`reference.cross_entropy` of logits whose vocabulary is split over the mesh axis
  `axis_name` (inside `shard_map`): plain jnp and collectives, gradient by autodiff.

  Args:
    z: [tokens, v] this shard's logits, columns [i v, (i + 1) v) of the vocabulary on shard i.
    labels: [tokens] int, global indices; a label on no shard gives a label logit of 0.
    valid: [tokens] bool.
  """
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  v = z.shape[-1]
  psum = lambda x: _numerics.psum(x, axis_name)
  lse = _numerics.logsumexp(z, axis=-1, axis_name=axis_name)
  hit = (labels - lax.axis_index(axis_name) * v)[:, None] == jnp.arange(v)
  loss = lse - psum(jnp.sum(jnp.where(hit, z, 0.0), axis=-1))
  if label_smoothing:
    z_mean = psum(jnp.sum(z, axis=-1)) / (v * psum(1))
    loss = (1 - label_smoothing) * loss + label_smoothing * (lse - z_mean)
  if z_loss:
    loss = loss + z_loss * jnp.square(lse)
  return jnp.where(valid, jnp.where(valid, loss, 0.0), 0.0)


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  del block_size
  z = _softcap.apply(logits(hidden, weight, vd=vd), softcap)
  if axis_name is not None:
    return sharded_cross_entropy(z, labels, valid, axis_name=axis_name,
                                 label_smoothing=label_smoothing, z_loss=z_loss)
  return reference.cross_entropy(z, labels, valid, label_smoothing=label_smoothing,
                                 z_loss=z_loss)
