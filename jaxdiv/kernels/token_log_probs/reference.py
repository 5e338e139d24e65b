"""The truth for the fused token log-probabilities: materialise the logits, then plain jnp
(gradient by autodiff)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxdiv import _numerics
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.linear_cross_entropy import reference as lce_reference


def from_logits(x, labels, valid, *, softcap=None, inv_t=1.0, axis_name=None):
  """(log p[label], entropy) per token of the raw logits `x` [tokens, v] (float32 or wider).

  With `axis_name`, `x` is this shard's slice of the vocabulary (columns [i v, (i + 1) v) on
  shard i) and `labels` are global indices.
  """
  z = _softcap.apply(x.astype(jnp.promote_types(x.dtype, jnp.float32)), softcap, inv_t)
  v = z.shape[-1]
  psum = lambda a: _numerics.psum(a, axis_name)
  lse = _numerics.logsumexp(z, axis=-1, axis_name=axis_name)
  log_p = z - lse[:, None]
  first = 0 if axis_name is None else lax.axis_index(axis_name) * v
  hit = (labels - first)[:, None] == jnp.arange(v)
  log_prob = psum(jnp.sum(jnp.where(hit, log_p, 0.0), axis=-1))
  p = jnp.exp(log_p)
  # -p log p with 0 where p = 0 (double where: log_p may be -inf there).
  entropy = -psum(jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, log_p, 0.0), 0.0), axis=-1))
  zero = lambda a: jnp.where(valid, jnp.where(valid, a, 0.0), 0.0)
  return zero(log_prob), zero(entropy)


def token_log_probs(hidden, weight, labels, valid, *, vd: bool, softcap=None, inv_t=1.0,
                    block_size=None, axis_name=None):
  del block_size
  x = lce_reference.logits(hidden, weight, vd=vd)
  return from_logits(x, labels, valid, softcap=softcap, inv_t=inv_t, axis_name=axis_name)
