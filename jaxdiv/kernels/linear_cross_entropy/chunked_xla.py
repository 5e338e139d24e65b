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
from jaxdiv.kernels import _softcap

# One [tokens, block] float32 tile of logits is the largest temporary: keep it near this size.
_TILE_BYTES = {"cpu": 16 << 20, "gpu": 512 << 20, "tpu": 256 << 20}


def default_block(tokens: int, vocab: int, backend: str) -> int:
  b = _TILE_BYTES.get(backend, 16 << 20) // (4 * max(tokens, 1))
  b = 1 << max(7, min(13, b.bit_length() - 1))
  return min(b, vocab)


def vocab_size(weight, vd: bool) -> int:
  return weight.shape[0 if vd else 1]


def weight_block(weight, c0, bv: int, vd: bool):
  return lax.dynamic_slice_in_dim(weight, c0, bv, axis=0 if vd else 1)


def matmul(a, b, contract):
  """`dot_general` with float32 accumulation and, for float32 operands, full float32 products
  (GPUs would otherwise round them to tf32; bfloat16 operands are unaffected)."""
  return lax.dot_general(a, b, (contract, ((), ())), precision=lax.Precision.HIGHEST,
                         preferred_element_type=jnp.float32)


def block_logits(hidden, w_blk, vd: bool):
  """[tokens, bv] float32 logits of one weight block ([bv, d] if vd else [d, bv])."""
  return matmul(hidden, w_blk, ((1,), (1,)) if vd else ((1,), (0,)))


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
  hit = (labels >= 0) & (labels < vocab_size(weight, vd))
  w_y = jnp.take(weight, jnp.where(hit, labels, 0), axis=0 if vd else 1)
  w_y = (w_y if vd else w_y.T).astype(jnp.float32)  # [tokens, d]
  z = jnp.sum(hidden.astype(jnp.float32) * w_y, axis=-1)
  return jnp.where(hit, _softcap.apply(z, softcap), 0.0)


def _stats(hidden, weight, labels, *, bv, vd, softcap=None, block_max=False, sums=True):
  """Per-token `CeStats`; with `block_max`, `FilterStats` (the filtered backward's input).
  Without `sums` (no label smoothing) the row sums are left 0 and the label logits are
  gathered (`label_logits`), so the blocks feed the logsumexp alone."""
  v = vocab_size(weight, vd)
  nv = bw.num_blocks(v, bv)

  def body(j, carry):
    state, z_label, z_sum, bmax = carry
    c0 = bw.block_start(j, v, bv)
    own = bw.owned(j, c0, bv)
    z = _softcap.apply(block_logits(hidden, weight_block(weight, c0, bv, vd), vd), softcap)
    if sums:
      zl, zs = bw.label_and_sum(z, labels, c0 + jnp.arange(bv), own)
      z_label, z_sum = z_label + zl, z_sum + zs
    if block_max:  # over the whole (clamped) block: the tile the backward recomputes
      bmax = lax.dynamic_update_slice_in_dim(bmax, jnp.max(z, axis=-1)[:, None], j, axis=1)
    # The block's exponentials are written before they are summed, so that XLA:CPU vectorises
    # them (`lse_update`); the [tokens, bv] buffer is the logits' own size.
    return bw.lse_update(state, z, own, materialize=True), z_label, z_sum, bmax

  # Typed like `hidden` (see `typed_alike`), so that under shard_map's replication checks the
  # loop's carry has the type of the logits it accumulates.
  zeros = jnp.zeros_like(hidden[:, 0], jnp.float32)
  bmax = jnp.zeros_like(hidden, jnp.float32, shape=(hidden.shape[0], nv if block_max else 0))
  state, z_label, z_sum, bmax = bw.fori_blocks(
      nv, body, (bw.Lse(zeros - jnp.inf, zeros), zeros, zeros, bmax))
  if not sums:
    z_label = z_label + label_logits(hidden, weight, labels, vd, softcap)
  stats = bw.CeStats(bw.lse_finish(state), z_label, z_sum)
  return FilterStats(*stats, bmax) if block_max else stats


def xla_dlogits(hidden, w_blk, labels, stats, g, cols, *, vd, softcap=None, **cfg):
  """The gradient of one block's logits, recomputed from `hidden` and the block of weights
  (through the cap c tanh(x / c) when `softcap` is set)."""
  x = block_logits(hidden, w_blk, vd)
  d = bw.cross_entropy_dlogits(_softcap.apply(x, softcap), stats.lse, labels, cols, g, **cfg)
  return d if softcap is None else d * _softcap.derivative(x, softcap)


def backward(hidden, weight, labels, stats, g, *, bv, vd, dlogits_fn):
  """(d hidden, d weight), block by block over the vocabulary.

  `dlogits_fn(hidden, w_blk, labels, stats, g, cols)` gives the [tokens, bv] gradient of the
  block's logits (recomputed). It is cast to the activation dtype before both matmuls, which
  accumulate in float32.
  """
  v = vocab_size(weight, vd)

  def body(j, carry):
    dh, dw = carry
    c0 = bw.block_start(j, v, bv)
    w_blk = weight_block(weight, c0, bv, vd)
    d = dlogits_fn(hidden, w_blk, labels, stats, g, c0 + jnp.arange(bv)).astype(hidden.dtype)
    # The clamped last block overlaps its predecessor: its d_W columns are recomputed with the
    # same values, but d_hidden must count each column once.
    d_own = jnp.where(bw.owned(j, c0, bv), d, jnp.zeros((), d.dtype))
    dh = dh + matmul(d_own, w_blk, ((1,), (0,)) if vd else ((1,), (1,)))
    # [bv, d] = d^T @ hidden, or [d, bv] = hidden^T @ d
    dw_blk = matmul(d, hidden, ((0,), (0,))) if vd else matmul(hidden, d, ((0,), (0,)))
    dw = lax.dynamic_update_slice_in_dim(dw, dw_blk.astype(dw.dtype), c0, axis=0 if vd else 1)
    return dh, dw

  init = (jnp.zeros_like(hidden, jnp.float32), jnp.zeros_like(weight))
  dh, dw = bw.fori_blocks(bw.num_blocks(v, bv), body, init)
  return dh.astype(hidden.dtype), dw


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


def tiled_backward(hidden, weight, *, bv, bn, vd, tile_dlogits, skip=None):
  """(d hidden, d weight), float32, walking [bn tokens, bv vocabulary] tiles: each vocabulary
  block's d weight is accumulated over the token blocks, then written into place.

  `tile_dlogits(r0, h, w_blk, cols)` gives the float32 [bn, bv] gradient of the tile's logits
  (rows r0.. of `hidden`, `h`; the weight block `w_blk` at global columns `cols`), cast to the
  activation dtype before both matmuls. With `skip(r0, j)` (a bool scalar), a tile for which it
  is True is not computed (`lax.cond`: its three matmuls do not run). The clamped last blocks
  overlap their predecessors: a row and a column count once in d hidden; an overlapping block's
  d weight columns are written again with its own values.
  """
  n, v = hidden.shape[0], vocab_size(weight, vd)

  def vocab_block(j, carry):
    dh, dw = carry
    c0 = bw.block_start(j, v, bv)
    w_blk = weight_block(weight, c0, bv, vd)
    col_own = bw.owned(j, c0, bv)

    def token_block(i, carry):
      r0 = bw.block_start(i, n, bn)

      def tile(carry):
        dh, dw_blk = carry
        h = lax.dynamic_slice_in_dim(hidden, r0, bn)
        d = tile_dlogits(r0, h, w_blk, c0 + jnp.arange(bv)).astype(hidden.dtype)
        own = bw.owned(i, r0, bn)[:, None]
        d_own = jnp.where(own & col_own, d, jnp.zeros((), d.dtype))
        dh_rows = lax.dynamic_slice_in_dim(dh, r0, bn) + matmul(
            d_own, w_blk, ((1,), (0,)) if vd else ((1,), (1,)))
        dh = lax.dynamic_update_slice_in_dim(dh, dh_rows, r0, 0)
        d_rows = jnp.where(own, d, jnp.zeros((), d.dtype))
        dw_blk = dw_blk + (matmul(d_rows, h, ((0,), (0,))) if vd
                           else matmul(h, d_rows, ((0,), (0,))))
        return dh, dw_blk

      if skip is None:
        return tile(carry)
      return lax.cond(skip(r0, j), lambda c: c, tile, carry)

    dh, dw_blk = bw.fori_blocks(bw.num_blocks(n, bn), token_block,
                                (dh, jnp.zeros_like(w_blk, jnp.float32)))
    return dh, lax.dynamic_update_slice_in_dim(dw, dw_blk, c0, axis=0 if vd else 1)

  init = (jnp.zeros_like(hidden, jnp.float32), jnp.zeros_like(weight, jnp.float32))
  return bw.fori_blocks(bw.num_blocks(v, bv), vocab_block, init)


def filtered_backward(hidden, weight, labels, stats: FilterStats, g, *, bv, bn, vd, eps,
                      vocab, label_smoothing, z_loss):
  """(d hidden, d weight) with the gradient filter: `backward`'s result, less the softmax
  entries of every [bn, bv] tile in which they are all below `eps` (those tiles are skipped).

  The logits' gradient is split as (softmax part) - (label part) - (smoothing part): the
  softmax part `p · g (1 + 2 z_loss lse)` goes tile by tile (`tiled_backward`); the label part
  (a one-hot per token) is a gather and a scatter, and the smoothing part (ls g / V on every
  entry) is rank one, both added exactly. A tile is kept unless every one of its tokens that
  has a gradient has `max logit - lse < log eps` there (a NaN keeps it, so NaN propagates).
  """
  v = vocab_size(weight, vd)
  lse = bw.lse_shift(stats.lse)
  scale = g * (1.0 + 2.0 * z_loss * lse) if z_loss else g
  negligible = (stats.block_max - lse[:, None] < math.log(eps)) | (g == 0)[:, None]
  h32 = hidden.astype(jnp.float32)

  def softmax_part(r0, h, w_blk, cols):
    rows = lambda a: lax.dynamic_slice_in_dim(a, r0, h.shape[0])
    return jnp.exp(block_logits(h, w_blk, vd) - rows(lse)[:, None]) * rows(scale)[:, None]

  skip = lambda r0, j: jnp.all(lax.dynamic_slice(negligible, (r0, j), (bn, 1)))
  dh, dw = tiled_backward(hidden, weight, bv=bv, bn=bn, vd=vd, tile_dlogits=softmax_part,
                          skip=skip)
  # The label part: -(1 - ls) g on each token's label column (labels outside this weight's
  # columns, ignored or on another shard, match nothing).
  hit = (labels >= 0) & (labels < v)
  gy = jnp.where(hit, (1.0 - label_smoothing) * g, 0.0)
  y = jnp.where(hit, labels, 0)
  w_y = jnp.take(weight, y, axis=0 if vd else 1).astype(jnp.float32)  # [n, d] or [d, n]
  dh = dh - gy[:, None] * (w_y if vd else w_y.T)
  rows = gy[:, None] * h32  # [n, d]
  dw = dw.at[y].add(-rows) if vd else dw.at[:, y].add(-rows.T)
  if label_smoothing:  # -ls g / V on every entry: a rank-one term
    gs = label_smoothing / vocab * g
    w_sum = jnp.sum(weight.astype(jnp.float32), axis=0 if vd else 1)  # [d]
    dh = dh - gs[:, None] * w_sum
    col = jnp.sum(gs[:, None] * h32, axis=0)  # [d]
    dw = dw - (col[None, :] if vd else col[:, None])
  return dh.astype(hidden.dtype), dw.astype(weight.dtype)


def shard_labels(labels, weight, vd: bool, axis_name):
  """(labels relative to this shard's first column, size of the whole vocabulary).

  Shard `i` of `axis_name` holds columns [i v, (i + 1) v) of the vocabulary (v local columns).
  A label outside them becomes negative or >= v locally and matches no column here, so ignored
  and out-of-range labels stay unmatched on every shard. Without `axis_name`: unchanged.
  """
  v = vocab_size(weight, vd)
  if axis_name is None:
    return labels, v
  return labels - lax.axis_index(axis_name) * v, global_vocab_size(weight, vd, axis_name)


def global_vocab_size(weight, vd: bool, axis_name) -> int:
  """The whole vocabulary's size: this shard's times the number of shards of `axis_name`."""
  v = vocab_size(weight, vd)
  return v if axis_name is None else v * int(lax.psum(1, axis_name))


def combine_stats(stats: bw.CeStats, axis_name) -> bw.CeStats:
  """Whole-vocabulary statistics from each shard's: the lses merge through their max (pmax,
  under stop_gradient) and the psum of the shifted exponentials, the label logit and the row
  sum through psum (the label's shard contributes it, the others 0)."""
  m = _numerics.pmax(stats.lse, axis_name)
  s = _numerics.psum(jnp.exp(stats.lse - bw.finite_or_zero(m)), axis_name)
  # `_replace` keeps a `FilterStats`' block maxima, which stay local (compared with the global
  # lse in the backward).
  return stats._replace(lse=bw.lse_finish(bw.Lse(m, s)),
                        z_label=_numerics.psum(stats.z_label, axis_name),
                        z_sum=_numerics.psum(stats.z_sum, axis_name))


def typed_alike(hidden, weight):
  """`hidden` and `weight`, each plus a zero typed like the other (XLA folds the additions).

  Under shard_map's replication checks (check_vma) a custom VJP must return each cotangent with
  its input's type, and a loop's carry must keep its type. Typed as varying over every mesh axis
  that either varies over (hidden over the vocabulary axis, the weight over a data axis), each
  shard returns its own contribution to d hidden and d weight, and the implicit pvary of the
  additions transposes into their psum over the shards. Without the checks the additions change
  nothing, and shard_map sums the cotangents of an input replicated over an axis itself.
  """
  return (hidden + jnp.zeros_like(weight, shape=()).astype(hidden.dtype),
          weight + jnp.zeros_like(hidden, shape=()).astype(weight.dtype))


def make(stats_fn, dlogits_fn, *, bv, vd, vocab, label_smoothing, z_loss, axis_name=None,
         softcap=None, grad_fn=None):
  """The fused loss `f((hidden, weight), labels, valid)` from a stats pass and a block
  gradient; shared by the XLA and the Pallas implementations.

  With `axis_name`, `stats_fn` and `dlogits_fn` see this shard's weight and shifted labels
  (`shard_labels`) and `vocab` is the global size: the statistics are combined across shards
  in the forward, and the backward uses the global lse. `grad_fn(hidden, weight, labels, stats,
  g)`, when given, replaces the blockwise backward of `dlogits_fn`.
  """
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
  if grad_fn is None:
    dlogits = functools.partial(dlogits_fn, vd=vd, softcap=softcap, **cfg)
    grad_fn = functools.partial(backward, bv=bv, vd=vd, dlogits_fn=dlogits)
  loss_fn = functools.partial(bw.cross_entropy_from_stats, **cfg)
  if axis_name is None:
    f = bw.masked_loss_vjp(stats_fn, grad_fn, loss_fn)
    return lambda x, labels, valid: f(typed_alike(*x), labels, valid)

  # Each shard's output is the loss on shard 0 and 0 elsewhere; their psum is the loss, exactly,
  # and psum's transpose hands every shard the loss's cotangent with or without check_vma
  # (without it, shard_map divides a replicated output's cotangent by the axis size and the
  # transpose of psum sums it back), so the backward sees the same `g` as on one device.
  first = lambda stats: jnp.where(lax.axis_index(axis_name) == 0, loss_fn(stats), 0.0)
  f = bw.masked_loss_vjp(lambda *a: combine_stats(stats_fn(*a), axis_name), grad_fn, first)

  return lambda x, labels, valid: lax.psum(f(typed_alike(*x), labels, valid), axis_name)


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None,
                         grad_filter_eps=None):
  v = vocab_size(weight, vd)
  labels, vocab = shard_labels(labels, weight, vd, axis_name)
  bv = default_block(hidden.shape[0], v, jax.default_backend())
  if grad_filter_eps is not None:
    bv = min(bv, _FILTER_BLOCK)
  bv = bw.pick_block(v, block_size, bv)
  grad_fn = None
  if grad_filter_eps is not None:
    if softcap is not None:  # the cap's derivative would make the smoothing part dense
      raise ValueError("`grad_filter_eps` does not support `softcap`; pass one of them.")
    grad_fn = functools.partial(
        filtered_backward, bv=bv, bn=min(_FILTER_ROWS, hidden.shape[0]), vd=vd,
        eps=grad_filter_eps, vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
  stats_fn = functools.partial(_stats, bv=bv, vd=vd, softcap=softcap,
                               block_max=grad_filter_eps is not None, sums=bool(label_smoothing))
  f = make(stats_fn, xla_dlogits, bv=bv, vd=vd, vocab=vocab, label_smoothing=label_smoothing,
           z_loss=z_loss, axis_name=axis_name, softcap=softcap, grad_fn=grad_fn)
  return f((hidden, weight), labels, valid)
