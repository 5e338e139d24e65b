"""Fused linear cross-entropy, blockwise over the vocabulary, with an lse-only residual.

Forward: for each vocabulary block, logits = hidden @ W_block (float32 accumulation) feed an
online logsumexp; only (lse, z[y], sum z) per token survive (z[y] gathered, one dot product a
token, and sum z left out, when there is no label smoothing). Backward: each block's logits are
recomputed, its softmax gradient is cast to the activation dtype, then
`d_hidden += d_logits @ W_block^T` (float32 accumulator) and `d_W_block = hidden^T @ d_logits`
is written into place, so no [d, vocab] accumulator is carried and no [tokens, vocab] array
exists. That is 8·N·D·V FLOPs (2 forward, 6 backward) against the 6·N·D·V of computing the
gradients during the forward pass (Liger-Kernel): the price of per-token losses with arbitrary
cotangents and of a residual that survives rematerialisation.

Gradient filter (`grad_filter_eps`, opt-in, as Cut Cross-Entropy): the forward also keeps each
token's largest logit per vocabulary block ([tokens, blocks], `FilterStats`), and the backward
walks [token block, vocabulary block] tiles, skipping (under `lax.cond`, so their three matmuls
are not run) every tile whose softmax probabilities are all below the threshold. Only the softmax
part of the logits' gradient goes through the tiles; the label and smoothing parts are sparse or
rank one and are added exactly, once, outside them. Every dropped entry of the logits' gradient is
below `eps · |g| · (1 + 2 z_loss lse)`, which bounds the error of both gradients.

Vocabulary parallelism (`axis_name`, inside `shard_map`): each shard runs the same passes on its
slice of the weight with labels shifted to its first column; the per-token statistics are
merged across shards (`combine_stats`) inside the forward, and the backward recomputes the local
logits against the global lse. Only [tokens] vectors cross devices.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap

# (tokens, vocabulary) of one tile of the filtered backward, its unit of skipping: small, so
# that whole tiles fall below the threshold (on a trained trigram LM head, V=8192, 2^-12: 49% of
# 64x256 tiles, 37% of 64x512, 3% of 256x1024, 0% of 256x2048; `bench/kernels.py --only filter`).
_FILTER_ROWS = 64
_FILTER_BLOCK = 512


class FilterStats(NamedTuple):
  """`CeStats` plus each token's largest logit in each vocabulary block, [tokens, blocks]."""

  lse: jax.Array
  z_label: jax.Array
  z_sum: jax.Array
  block_max: jax.Array


def label_logits(hidden, weight, labels, vd: bool, softcap=None):
  """[tokens] float32 logit of each token's label (0 for a label outside this weight's
  columns): one gathered column and a dot product per token, instead of a pass over every
  block of logits."""
  hit, w_y = _label_rows(weight, labels, vd)
  z = jnp.sum(hidden.astype(jnp.float32) * w_y, axis=-1)
  return jnp.where(hit, _softcap.apply(z, softcap), 0.0)


def _label_rows(weight, labels, vd: bool):
  """(which labels fall in this weight's columns, [tokens, d] float32 weight row of each
  token's label (of column 0 for the others))."""
  hit = (labels >= 0) & (labels < lb.vocab_size(weight, vd))
  w_y = jnp.take(weight, jnp.where(hit, labels, 0), axis=0 if vd else 1)
  return hit, (w_y if vd else w_y.T).astype(jnp.float32)


def _stats(hidden, weight, labels, *, bv, vd, softcap=None, block_max=False, sums=True):
  """Per-token `CeStats`; with `block_max`, `FilterStats` (the filtered backward's input).
  Without `sums` (no label smoothing) the row sums are left 0 and the label logits are
  gathered (`label_logits`), so the blocks feed the logsumexp alone."""
  nv = bw.num_blocks(lb.vocab_size(weight, vd), bv)

  def body(carry, z, c0, own, j):
    state, z_label, z_sum, bmax = carry
    if sums:
      zl, zs = bw.label_and_sum(z, labels, c0 + jnp.arange(bv), own)
      z_label, z_sum = z_label + zl, z_sum + zs
    if block_max:  # over the whole (clamped) block: the tile the backward recomputes
      bmax = lax.dynamic_update_slice_in_dim(bmax, jnp.max(z, axis=-1)[:, None], j, axis=1)
    # The block's exponentials are written before they are summed, so that XLA:CPU vectorises
    # them (`lse_update`); the [tokens, bv] buffer is the logits' own size.
    return bw.lse_update(state, z, own, materialize=True), z_label, z_sum, bmax

  # Typed like `hidden` (see `_linear_blocks.typed_alike`), so that under shard_map's
  # replication checks the loop's carry has the type of the logits it accumulates.
  zeros = jnp.zeros_like(hidden[:, 0], jnp.float32)
  bmax = jnp.zeros_like(hidden, jnp.float32, shape=(hidden.shape[0], nv if block_max else 0))
  state, z_label, z_sum, bmax = lb.fold(
      hidden, weight, body, (bw.Lse(zeros - jnp.inf, zeros), zeros, zeros, bmax), bv=bv, vd=vd,
      softcap=softcap, with_index=True)
  if not sums:
    z_label = z_label + label_logits(hidden, weight, labels, vd, softcap)
  stats = bw.CeStats(bw.lse_finish(state), z_label, z_sum)
  return FilterStats(*stats, bmax) if block_max else stats


def xla_dlogits(hidden, w_blk, labels, stats, g, cols, *, vd, softcap=None, **cfg):
  """The gradient of one block's logits, recomputed from `hidden` and the block of weights
  (through the cap c tanh(x / c) when `softcap` is set)."""
  x = lb.block_logits(hidden, w_blk, vd)
  d = bw.cross_entropy_dlogits(_softcap.apply(x, softcap), stats.lse, labels, cols, g, **cfg)
  return d if softcap is None else d * _softcap.derivative(x, softcap)


def check_grad_filter(eps) -> float | None:
  """The filter threshold as a float in (0, 1), None for none (0 is none: nothing is below it),
  or a clear error naming `grad_filter_eps`."""
  if eps is None:
    return None
  try:
    eps = float(eps)
  except (TypeError, ValueError):
    raise ValueError(f"`grad_filter_eps` must be None or a float in [0, 1); got {eps!r}.") from None
  if not 0.0 <= eps < 1.0:
    raise ValueError(f"`grad_filter_eps` must be None or a float in [0, 1); got {eps!r}.")
  return eps or None


def filtered_backward(hidden, weight, labels, stats: FilterStats, g, *, bv, bn, vd, eps,
                      vocab, label_smoothing, z_loss):
  """(d hidden, d weight) with the gradient filter: `backward`'s result, less the softmax
  entries of every [bn, bv] tile in which they are all below `eps` (those tiles are skipped).

  The logits' gradient is split as (softmax part) - (label part) - (smoothing part): the
  softmax part `p · g (1 + 2 z_loss lse)` goes tile by tile (`_linear_blocks.backward` with
  `bn` and `skip`); the label part (a one-hot per token) is a gather and a scatter, and the
  smoothing part (ls g / V on every entry) is rank one, both added exactly. A tile is kept
  unless every one of its tokens that has a gradient has `max logit - lse < log eps` there (a
  NaN keeps it, so NaN propagates).
  """
  lse = bw.lse_shift(stats.lse)
  # A lost token (`_blockwise.lost_rows`: a NaN or +inf logit) gets no gradient, as in
  # `_blockwise.softmax_dlogits`; its hidden state, if not finite, counts as 0 in d weight.
  lost = bw.lost_rows(stats.lse)
  g = jnp.where(lost, 0.0, g)
  scale = g * (1.0 + 2.0 * z_loss * bw.finite_or_zero(lse)) if z_loss else g
  negligible = (stats.block_max - lse[:, None] < math.log(eps)) | (g == 0)[:, None]
  h32 = bw.finite_or_zero(hidden.astype(jnp.float32))

  def softmax_part(h, w_blk, labels, rows, g, cols):  # `rows`: this tile's (lse, scale)
    lse, scale = rows
    p = jnp.exp(lb.block_logits(h, w_blk, vd) - lse[:, None])
    return jnp.where(bw.lost_rows(lse)[:, None], 0.0, p) * scale[:, None]

  skip = lambda r0, j: jnp.all(lax.dynamic_slice(negligible, (r0, j), (bn, 1)))
  dh, dw = lb.backward(hidden, weight, labels, (lse, scale), g, bv=bv, vd=vd,
                       dlogits_fn=softmax_part, bn=bn, skip=skip, cast=False)
  # The label part: -(1 - ls) g on each token's label column (labels outside this weight's
  # columns, ignored or on another shard, match nothing).
  hit, w_y = _label_rows(weight, labels, vd)  # w_y: [n, d]
  gy = jnp.where(hit, (1.0 - label_smoothing) * g, 0.0)
  y = jnp.where(hit, labels, 0)
  dh = dh - gy[:, None] * w_y
  rows = gy[:, None] * h32  # [n, d]
  dw = dw.at[y].add(-rows) if vd else dw.at[:, y].add(-rows.T)
  if label_smoothing:  # -ls g / V on every entry: a rank-one term
    gs = label_smoothing / vocab * g
    w_sum = jnp.sum(weight.astype(jnp.float32), axis=0 if vd else 1)  # [d]
    dh = dh - gs[:, None] * w_sum
    col = jnp.sum(gs[:, None] * h32, axis=0)  # [d]
    dw = dw - (col[None, :] if vd else col[:, None])
  return dh.astype(hidden.dtype), dw.astype(weight.dtype)


def combine_stats(stats: bw.CeStats, axis_name) -> bw.CeStats:
  """Whole-vocabulary statistics from each shard's: the lses merge through their max (pmax,
  under stop_gradient) and the psum of the shifted exponentials, the label logit and the row
  sum through psum (the label's shard contributes it, the others 0)."""
  lse = bw.lse_finish(bw.lse_psum(bw.Lse(stats.lse, jnp.ones_like(stats.lse)), axis_name))
  # `_replace` keeps a `FilterStats`' block maxima, which stay local (compared with the global
  # lse in the backward).
  return stats._replace(lse=lse, z_label=_numerics.psum(stats.z_label, axis_name),
                        z_sum=_numerics.psum(stats.z_sum, axis_name))


def make(stats_fn, dlogits_fn, *, bv, vd, vocab, label_smoothing, z_loss, axis_name=None,
         softcap=None, grad_fn=None):
  """The fused loss `f((hidden, weight), labels, valid)` from a stats pass and a block
  gradient; shared by the XLA and the Pallas implementations.

  With `axis_name`, `stats_fn` and `dlogits_fn` see this shard's weight and shifted labels
  (`_linear_blocks.shard_labels`) and `vocab` is the global size: the statistics are combined
  across shards in the forward, and the backward uses the global lse. `grad_fn(hidden, weight,
  labels, stats, g)`, when given, replaces the blockwise backward of `dlogits_fn`.
  """
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
  if grad_fn is None:
    dlogits = functools.partial(dlogits_fn, vd=vd, softcap=softcap, **cfg)
    grad_fn = functools.partial(lb.backward, bv=bv, vd=vd, dlogits_fn=dlogits)
  loss_fn = functools.partial(bw.cross_entropy_from_stats, **cfg)
  if axis_name is None:
    f = bw.masked_loss_vjp(stats_fn, grad_fn, loss_fn)
  else:
    first = lambda stats: lb.on_first_shard(loss_fn(stats), axis_name)
    f = bw.masked_loss_vjp(lambda *a: combine_stats(stats_fn(*a), axis_name), grad_fn, first)
  return lb.psum_outputs(f, axis_name)


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None,
                         grad_filter_eps=None):
  filtered = grad_filter_eps is not None
  if filtered and softcap is not None:  # the cap's derivative would make the smoothing part dense
    raise ValueError("`grad_filter_eps` does not support `softcap`; pass one of them.")
  labels, vocab, bv = lb.walk(hidden, weight, labels, vd=vd, block_size=block_size,
                              axis_name=axis_name, max_block=_FILTER_BLOCK if filtered else None)
  grad_fn = None
  if filtered:
    grad_fn = functools.partial(
        filtered_backward, bv=bv, bn=min(_FILTER_ROWS, hidden.shape[0]), vd=vd,
        eps=grad_filter_eps, vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
  stats_fn = functools.partial(_stats, bv=bv, vd=vd, softcap=softcap, block_max=filtered,
                               sums=bool(label_smoothing))
  f = make(stats_fn, xla_dlogits, bv=bv, vd=vd, vocab=vocab, label_smoothing=label_smoothing,
           z_loss=z_loss, axis_name=axis_name, softcap=softcap, grad_fn=grad_fn)
  return f((hidden, weight), labels, valid)
