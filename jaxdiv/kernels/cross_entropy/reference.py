"""The truth every cross-entropy implementation is tested against: plain jnp, no custom VJP."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _numerics


def cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array, *,
                  label_smoothing: float = 0.0, z_loss: float = 0.0) -> jax.Array:
  """Per-token (1-ls)(lse - z[y]) + ls (lse - mean z) + z_loss lse^2; 0 where not `valid`.

  Args:
    logits: [tokens, vocab], any float dtype (computed in at least float32).
    labels: [tokens] int; only read where `valid`.
    valid: [tokens] bool.
  """
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  lse = _numerics.logsumexp(z, axis=-1)
  safe = jnp.where(valid, labels, 0)
  z_label = jnp.take_along_axis(z, safe[:, None], axis=-1)[:, 0]
  loss = lse - z_label
  if label_smoothing:
    loss = (1 - label_smoothing) * loss + label_smoothing * (lse - jnp.mean(z, axis=-1))
  if z_loss:
    loss = loss + z_loss * jnp.square(lse)
  # Double where: an ignored row's loss may be inf or NaN (a -inf label logit).
  return jnp.where(valid, jnp.where(valid, loss, 0.0), 0.0)
