"""Cross-entropy in plain XLA with one exponential per logit and the gradient written in place.

Forward: the row max, then `e = exp(z - max)` once (an elementwise loop, which XLA:CPU
vectorises; inside a reduction it does not), then its row sums. The derivative is a
`custom_jvp` whose tangent is linear in the logits' tangent, `sum((softmax - target) * dz)`,
with `e` (in the logits' dtype) as the residual it scales: JAX transposes it for reverse mode,
and XLA writes the gradient in place of `e`, so the value and gradient cost one pass of `exp`
and one new [tokens, vocab] array, as optax's autodiff does, with label smoothing, z-loss and
masks on top; forward mode (`jax.jvp`, `jax.jacfwd`) works as well. The floor of any exact
value-and-gradient, one read, one `exp` and one new array, is timed beside it in
`bench/kernels.py`. A [tokens, vocab] residual is the price; `"chunked"` keeps only `lse`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv.kernels import _blockwise as bw


def _stats(z, labels, *, smoothing):
  """(CeStats, e = exp(z - max) in z's dtype, its row sums): the residual the tangent scales."""
  zf = z.astype(jnp.float32)
  m = jnp.max(zf, axis=-1)
  e = jnp.exp(zf - bw.finite_or_zero(m)[:, None])
  s = jnp.sum(e, axis=-1)
  lse = bw.lse_finish(bw.Lse(m, s))
  # An ignored token's label may be anything; its loss is dropped.
  z_label = jnp.take_along_axis(zf, jnp.clip(labels, 0, z.shape[-1] - 1)[:, None], axis=-1)
  z_sum = jnp.sum(zf, axis=-1) if smoothing else jnp.zeros_like(lse)
  return bw.CeStats(lse, z_label[:, 0], z_sum), e.astype(z.dtype), s


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None):
  del block_size  # one pass over whole rows; nothing to tile
  vocab = logits.shape[-1]
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)

  def value(z, labels, valid):
    ce, e, s = _stats(z, labels, smoothing=bool(label_smoothing))
    # Double where: an ignored token's statistics may be inf or NaN.
    return jnp.where(valid, bw.cross_entropy_from_stats(ce, **cfg), 0.0), (ce, e, s)

  @jax.custom_jvp
  def f(z, labels, valid):
    return value(z, labels, valid)[0]

  @f.defjvp
  def f_jvp(primals, tangents):
    z, labels, valid = primals
    loss, (ce, e, s) = value(z, labels, valid)

    def dlogits(g):  # the cotangent [tokens] to d logits: linear in g
      g = jnp.where(valid, g, 0.0)
      return bw.softmax_dlogits(e.astype(jnp.float32), ce.lse, labels, jnp.arange(vocab), g,
                                row_scale=1.0 / jnp.where(s > 0, s, 1.0), **cfg)

    # The tangent is the transpose of `dlogits`, so reverse mode transposes it back to
    # `dlogits(g)`: the per-token factors folded into one multiply of `e`, written in place.
    (tangent,) = jax.linear_transpose(dlogits, loss)(tangents[0].astype(jnp.float32))
    return loss, tangent

  return f(logits, labels, valid)
