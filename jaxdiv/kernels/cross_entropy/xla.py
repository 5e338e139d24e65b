"""Cross-entropy in plain XLA with one exponential per logit and the gradient written in place.

Forward: the row max, then `e = exp(z - max)` once (an elementwise loop, which XLA:CPU
vectorises; inside a reduction it does not), then its row sums. `e` is the residual, in the
logits' dtype, and the backward scales it into the gradient in place (XLA reuses its buffer for
the output), so the value and gradient cost one pass of `exp` and one new [tokens, vocab]
array, as optax's autodiff does, with label smoothing, z-loss and masks on top. The floor of
any exact value-and-gradient, one read, one `exp` and one new array, is timed beside it in
`bench/kernels.py`. A [tokens, vocab] residual is the price; `"chunked"` keeps only `lse`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv.kernels import _blockwise as bw


def _forward(z, labels, valid, *, ls, zl):
  zf = z.astype(jnp.float32)
  m = jnp.max(zf, axis=-1)
  e = jnp.exp(zf - bw.finite_or_zero(m)[:, None])
  s = jnp.sum(e, axis=-1)
  lse = bw.lse_finish(bw.Lse(m, s))
  z_label = jnp.take_along_axis(zf, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]
  z_sum = jnp.sum(zf, axis=-1) if ls else jnp.zeros_like(lse)
  loss = bw.cross_entropy_from_stats(bw.CeStats(lse, z_label, z_sum), z.shape[-1], ls, zl)
  # Double where: an ignored token's statistics may be inf or NaN.
  loss = jnp.where(valid, jnp.where(valid, loss, 0.0), 0.0)
  return loss, (e.astype(z.dtype), s, lse, labels, valid)


def _backward(res, g, *, ls, zl):
  e, s, lse, labels, valid = res
  vocab = e.shape[-1]
  g = jnp.where(valid, g.astype(jnp.float32), 0.0)
  # d loss / d z = softmax(z) (1 + 2 zl lse) - (1 - ls) onehot(y) - ls / V, scaled by g.
  scale = g / jnp.where(s > 0, s, 1.0)
  if zl:
    scale = scale * (1.0 + 2.0 * zl * bw.finite_or_zero(lse))
  hit = labels[:, None] == jnp.arange(vocab)
  d = e.astype(jnp.float32) * scale[:, None] - jnp.where(hit, ((1.0 - ls) * g)[:, None], 0.0)
  if ls:
    d = d - (ls / vocab) * g[:, None]
  return d.astype(e.dtype)


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None):
  del block_size  # one pass over whole rows; nothing to tile
  cfg = dict(ls=label_smoothing, zl=z_loss)

  @jax.custom_vjp
  def f(z, labels, valid):
    return _forward(z, labels, valid, **cfg)[0]

  def fwd(z, labels, valid):
    return _forward(z, labels, valid, **cfg)

  def bwd(res, g):
    return _backward(res, g, **cfg), None, None

  f.defvjp(fwd, bwd)
  return f(logits, labels, valid)
