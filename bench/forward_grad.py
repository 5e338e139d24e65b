"""A reduced (mean or sum) fused linear cross-entropy whose gradients are formed in the forward.

The alternative to the lse-only path, kept here in bench/ to be measured (`bench/kernels.py`), not
used by `fused_linear_cross_entropy` (tested in tests/kernels). For a scalar loss the cotangent is
one number, so the gradients can be computed before it is known and scaled by it afterwards: the
forward walks blocks of tokens, forms each block's [tokens, vocab] logits, their softmax and logits
gradient, and folds that into d_hidden and a float32 [D, V] d_weight accumulator: 6·N·D·V FLOPs
against the 8·N·D·V of the per-token path, which recomputes the logits in the backward (Liger-
Kernel's choice against Cut Cross-Entropy's). The costs: d_weight and d_hidden are held from the
forward to the backward (6.5% of matmul + optax's temporary memory at N=8192, D=1024, V=131072
against 0.64%), under `jax.checkpoint` the forward runs again with all of that work, and on a
2-core CPU the token-blocked matmuls ran no faster than the 8·N·D·V path's vocabulary-blocked ones
(1.21x and 1.05x of matmul + optax where it took 1.23x and 0.97x, N=2048, D=512, V=32768)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels import _args
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb

# One [tokens, vocab] float32 block of logits is the largest temporary: keep it near this size.
_BLOCK_BYTES = 16 << 20


def default_rows(tokens: int, vocab: int) -> int:
  return max(1, min(tokens, _BLOCK_BYTES // (4 * vocab)))


def _grads(hidden, weight, labels, valid, *, vd, rows, scale, vocab, label_smoothing, z_loss,
           grads=True):
  """(sum of per-token losses, d_hidden, d_weight) of `scale` x the summed loss; without
  `grads` only the sum (the gradients stay 0)."""
  n = hidden.shape[0]
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
  cols = jnp.arange(vocab)

  def body(i, carry):
    total, dh, dw = carry
    r0 = bw.block_start(i, n, rows)
    # The clamped last block overlaps its predecessor: its tokens count once in the sums.
    own = bw.owned(i, r0, rows)
    h = lax.dynamic_slice_in_dim(hidden, r0, rows)
    y = lax.dynamic_slice_in_dim(labels, r0, rows)
    ok = lax.dynamic_slice_in_dim(valid, r0, rows)
    z = lb.block_logits(h, weight, vd)
    lse = bw.lse_finish(bw.lse_update(bw.lse_init((rows,)), z))
    stats = bw.CeStats(lse, *bw.label_and_sum(z, y, cols, sums=bool(label_smoothing)))
    loss = jnp.where(ok, bw.cross_entropy_from_stats(stats, **cfg), 0.0)
    loss = _args.mark_bad_labels(loss, y, ok, vocab)
    total = total + jnp.sum(jnp.where(own, loss, 0.0))
    if not grads:
      return total, dh, dw
    g = jnp.where(ok, scale, 0.0)
    d = bw.cross_entropy_dlogits(z, stats.lse, y, cols, g, **cfg).astype(hidden.dtype)
    dh_blk = lb.matmul(d, weight, ((1,), (0,)) if vd else ((1,), (1,)))
    dh = lax.dynamic_update_slice_in_dim(dh, dh_blk.astype(dh.dtype), r0, 0)
    d_own = jnp.where(own[:, None], d, jnp.zeros((), d.dtype))
    dw = dw + (lb.matmul(d_own, h, ((0,), (0,))) if vd
               else lb.matmul(h, d_own, ((0,), (0,))))
    return total, dh, dw

  init = (jnp.zeros((), jnp.float32), jnp.zeros(hidden.shape, hidden.dtype),
          jnp.zeros(weight.shape, jnp.float32))
  return bw.fori_blocks(bw.num_blocks(n, rows), body, init)


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, reduction: str,
                         label_smoothing=0.0, z_loss=0.0, block_size=None):
  """The mean (over `valid` tokens; 0 if there are none) or the sum of the per-token loss."""
  n = hidden.shape[0]
  vocab = lb.vocab_size(weight, vd)
  rows = bw.pick_block(n, block_size, default_rows(n, vocab))
  run = functools.partial(_grads, vd=vd, rows=rows, vocab=vocab,
                          label_smoothing=label_smoothing, z_loss=z_loss)

  def scale_of(valid):
    if reduction == "sum":
      return jnp.float32(1.0)
    return 1.0 / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)

  @jax.custom_vjp
  def f(hidden, weight, labels, valid):
    scale = scale_of(valid)
    return run(hidden, weight, labels, valid, scale=scale, grads=False)[0] * scale

  def fwd(hidden, weight, labels, valid):
    scale = scale_of(valid)
    total, dh, dw = run(hidden, weight, labels, valid, scale=scale)
    return total * scale, (dh, dw)

  def bwd(res, g):
    dh, dw = res
    return ((g * dh.astype(jnp.float32)).astype(dh.dtype), (g * dw).astype(weight.dtype),
            None, None)

  f.defvjp(fwd, bwd)
  return f(hidden, weight, labels, valid)
