"""Fused linear cross-entropy reduced to a scalar, its gradients formed in the forward pass.

For `reduction="mean"` or `"sum"` the loss's cotangent is one number, so d hidden and d weight
can be formed before it is known and scaled by it in the backward (Liger-Kernel's method for a
scalar loss). The forward walks blocks of `rows` tokens. Each block's [rows, vocab] float32
logits give the tokens' logsumexp and losses; their exponentials, written once, give the
softmax and so the logits' gradient, which folds into d hidden (one [rows, vocab] x [vocab, d]
matmul, written into the block's rows) and into a float32 d weight, one chunk of `_CHUNK`
vocabulary columns at a time, updated in place. That is 6·N·D·V FLOPs where `chunked_xla`
spends 8·N·D·V (it keeps only the lse and recomputes the logits in the backward), and one
[rows, vocab] block plus one [chunk, d] product of temporaries.

The costs, which make it a choice for a reduced loss and not the per-token kernel: d hidden and
d weight are residuals from the forward to the backward; under `jax.checkpoint` the forward runs
again with all of its gradient work; and the [rows, vocab] block holds the whole vocabulary, so
a large vocabulary means few rows a block and small d weight matmuls. The default only on a
CPU with one device (`api.forward_grad_by_default`): under jit with token-sharded inputs its
dynamic token blocks make XLA gather the whole batch onto each device. Forward mode (`jax.jvp`)
is not defined, as for the other kernels' custom VJPs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels import _args
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.linear_cross_entropy import chunked_xla

# One [rows, vocab] float32 block of logits (and its exponentials, written over it) is the
# largest temporary: rows are chosen to keep it near this size.
_BLOCK_BYTES = 32 << 20
# Vocabulary columns of d weight updated by one [chunk, rows] x [rows, d] matmul.
_CHUNK = 2048


# The fewest tokens a block for `implementation=None` to take this path (`api.py`): with fewer,
# the d weight products are thin and d weight is read and written once a block. Against
# "chunked" at N=1024, D=256, float32 (`bench/kernels.py --only fused_rows`): 0.83x at 256
# tokens a block (V = 32768), 0.98x at 128, 1.46x at 64, 2.27x at 32.
MIN_DEFAULT_ROWS = 128


def rows_for(vocab: int) -> int:
  """Tokens a block whose [tokens, vocab] float32 logits fill `_BLOCK_BYTES`."""
  return max(1, _BLOCK_BYTES // (4 * max(vocab, 1)))


def default_rows(tokens: int, vocab: int) -> int:
  return max(1, min(tokens, rows_for(vocab)))


def _block(h, labels, g, weight, *, vd, vocab, label_smoothing, z_loss, softcap, grads):
  """(per-token losses, d logits or None) of one block of tokens; `g` [rows] the tokens'
  cotangents (0 for those that get none)."""
  x = lb.block_logits(h, weight, vd)  # [rows, vocab] float32
  z = _softcap.apply(x, softcap)
  z_label = chunked_xla.label_logits(h, weight, labels, vd, softcap)
  z_sum = jnp.sum(z, axis=1) if label_smoothing else jnp.zeros_like(z_label)
  state, _, e = bw.lse_step(bw.lse_init(z_label.shape), z, materialize=True)
  lse = bw.lse_finish(state)
  loss = bw.cross_entropy_from_stats(bw.CeStats(lse, z_label, z_sum), vocab, label_smoothing,
                                     z_loss)
  if not grads:
    return loss, None
  # `e` is exp(z - row max); 1 / its row sum makes it the softmax (0 for a row without mass,
  # whose gradient is 0; a NaN sum stays NaN).
  inv_s = jnp.where(state.s == 0, 0.0, 1.0 / jnp.where(state.s == 0, 1.0, state.s))
  d = bw.softmax_dlogits(e, lse, labels, jnp.arange(vocab), g, vocab, label_smoothing, z_loss,
                         row_scale=inv_s)
  if softcap is not None:
    d = d * _softcap.derivative(x, softcap)
  return loss, d.astype(h.dtype)


def _add_weight_grad(dw, d, h, *, vd):
  """`dw` + d^T h ([vocab, d] if vd, else h^T d as [d, vocab]), chunk by chunk of the
  vocabulary, each chunk's product added in place."""
  v = d.shape[1]
  chunk = min(_CHUNK, v)
  axis = 0 if vd else 1

  def body(j, dw):
    c0 = bw.block_start(j, v, chunk)
    # The clamped last chunk overlaps its predecessor: its earlier columns add nothing again.
    d_j = jnp.where(bw.owned(j, c0, chunk), lax.dynamic_slice_in_dim(d, c0, chunk, 1),
                    jnp.zeros((), d.dtype))
    prod = lb.matmul(d_j, h, ((0,), (0,))) if vd else lb.matmul(h, d_j, ((0,), (0,)))
    return lax.dynamic_update_slice_in_dim(
        dw, lax.dynamic_slice_in_dim(dw, c0, chunk, axis) + prod, c0, axis)

  return bw.fori_blocks(bw.num_blocks(v, chunk), body, dw)


def _walk(hidden, weight, labels, valid, scale, *, rows, vd, grads, **cfg):
  """(sum of the counted tokens' losses, d hidden, d weight) of `scale` times that sum, in
  float32; without `grads` the gradients stay 0."""
  n = hidden.shape[0]
  vocab = lb.vocab_size(weight, vd)

  def body(i, carry):
    total, dh, dw = carry
    r0 = bw.block_start(i, n, rows)
    own = bw.owned(i, r0, rows)  # the clamped last block overlaps its predecessor
    h, y, ok = (lax.dynamic_slice_in_dim(a, r0, rows) for a in (hidden, labels, valid))
    # A label outside [0, vocab) makes the loss NaN (`mark_bad_labels`) and gets no gradient,
    # as in the per-token implementations.
    counted = ok & own & (y >= 0) & (y < vocab)
    g = jnp.where(counted, scale, 0.0)
    loss, d = _block(h, y, g, weight, vd=vd, vocab=vocab, grads=grads, **cfg)
    loss = _args.mark_bad_labels(jnp.where(ok, loss, 0.0), y, ok, vocab)
    total = total + jnp.sum(jnp.where(own, loss, 0.0))
    if not grads:
      return total, dh, dw
    dh_blk = lb.matmul(d, weight, ((1,), (0,)) if vd else ((1,), (1,)))
    old = lax.dynamic_slice_in_dim(dh, r0, rows)
    dh = lax.dynamic_update_slice_in_dim(dh, jnp.where(own[:, None], dh_blk, old), r0, 0)
    # (a token whose hidden state is not finite adds 0 * NaN otherwise: `lb.backward` says why)
    return total, dh, _add_weight_grad(dw, d, bw.finite_or_zero(h), vd=vd)

  zeros = (jnp.zeros_like(hidden, jnp.float32, shape=()), jnp.zeros_like(hidden, jnp.float32),
           jnp.zeros_like(weight, jnp.float32))
  return bw.fori_blocks(bw.num_blocks(n, rows), body, zeros)


def reduced_loss(hidden, weight, labels, valid, *, vd: bool, reduction: str,
                 label_smoothing: float = 0.0, z_loss: float = 0.0, softcap=None,
                 block_size: int | None = None) -> jax.Array:
  """The float32 mean (over `valid` tokens; 0 if there are none) or sum of the per-token loss of
  `hidden` [n, d] and `weight`, `labels` [n] and `valid` [n]; `block_size`: tokens a block.
  `reduction` is checked by the public function (`api.py`)."""
  n = hidden.shape[0]
  vocab = lb.vocab_size(weight, vd)
  rows = bw.pick_block(n, block_size, default_rows(n, vocab))
  if n == 0:  # no tokens: 0, with zero gradients (empty slices carry no value)
    return jnp.sum(hidden[:0], dtype=jnp.float32) + jnp.sum(weight[:0], dtype=jnp.float32)
  run = functools.partial(_walk, rows=rows, vd=vd, label_smoothing=label_smoothing,
                          z_loss=z_loss, softcap=softcap)

  def scale_of(valid):
    if reduction == "sum":
      return jnp.float32(1.0)
    return 1.0 / jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)

  @jax.custom_vjp
  def f(hidden, weight, labels, valid):
    scale = scale_of(valid)
    return run(hidden, weight, labels, valid, scale, grads=False)[0] * scale

  def fwd(hidden, weight, labels, valid):
    scale = scale_of(valid)
    total, dh, dw = run(hidden, weight, labels, valid, scale, grads=True)
    return total * scale, (dh, dw)

  def bwd(res, g):
    dh, dw = res
    g = g.astype(jnp.float32)
    return (g * dh).astype(hidden.dtype), (g * dw).astype(weight.dtype), None, None

  f.defvjp(fwd, bwd)
  return f(*lb.typed_alike(hidden, weight), labels, valid)
