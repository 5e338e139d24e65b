"""The walk over vocabulary blocks of a fused linear head, shared by the fused ops.

`hidden` [tokens, d] times one block of the weight ([d, vocab] or, `vd`, [vocab, d]) gives one
[tokens, block] tile of logits; the forward passes fold the tiles into per-token statistics, and
`backward` recomputes each tile's logits gradient and multiplies it into d hidden (accumulated)
and the block of d weight (written in place). With `axis_name` (inside `shard_map`, the weight's
vocabulary split over that axis) each shard walks its own slice, with labels shifted to its first
column (`shard_labels`); the ops merge the statistics across shards and form their outputs on
shard 0 (`on_first_shard`), then psum them (`psum_outputs`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

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


def acc_dtype(*arrays):
  """The accumulation dtype that follows the inputs: float32, or float64 for float64 inputs."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def matmul(a, b, contract, acc=jnp.float32):
  """`dot_general` accumulated in `acc` and, for float32 operands, with full float32 products
  (GPUs would otherwise round them to tf32; bfloat16 operands are unaffected)."""
  return lax.dot_general(a, b, (contract, ((), ())), precision=lax.Precision.HIGHEST,
                         preferred_element_type=acc)


def block_logits(hidden, w_blk, vd: bool, acc=jnp.float32):
  """[tokens, bv] logits of one weight block ([bv, d] if vd else [d, bv]), accumulated in
  `acc`."""
  return matmul(hidden, w_blk, ((1,), (1,)) if vd else ((1,), (0,)), acc)


def logits(hidden, weight, vd: bool):
  """`block_logits` of the whole head, differentiable, with d weight formed from the hidden
  states' finite entries (:func:`backward` says why): its tangent is
  `d hidden @ weight + finite_or_zero(hidden) @ d weight` (`_blockwise`'s), the same products."""

  @jax.custom_jvp
  def f(hidden, weight):
    return block_logits(hidden, weight, vd)

  @f.defjvp
  def f_jvp(primals, tangents):
    h, w = primals
    dh, dw = tangents
    return f(h, w), block_logits(dh, w, vd) + block_logits(bw.finite_or_zero(h), dw, vd)

  return f(hidden, weight)


def fold(hidden, weight, body, init, *, bv: int, vd: bool, acc=jnp.float32, softcap=None,
         inv_t=1.0, with_index: bool = False):
  """Folds `body(carry, z, c0, own)` over the vocabulary blocks of `hidden @ weight`.

  `z` [tokens, bv] is the block's logits (accumulated in `acc`) capped and scaled,
  `softcap(x) / T`; `c0` its first column; `own` [bv] the columns it counts (the clamped last
  block overlaps its predecessor). With `with_index`, `body(carry, z, c0, own, j)` also gets the
  block's index j.
  """
  v = vocab_size(weight, vd)

  def step(j, carry):
    c0 = bw.block_start(j, v, bv)
    x = block_logits(hidden, weight_block(weight, c0, bv, vd), vd, acc)
    args = (carry, _softcap.apply(x, softcap, inv_t), c0, bw.owned(j, c0, bv))
    return body(*args, j) if with_index else body(*args)

  return bw.fori_blocks(bw.num_blocks(v, bv), step, init)


def backward(hidden, weight, labels, stats, g, *, bv, vd, dlogits_fn, acc=jnp.float32,
             bn=None, skip=None, cast=True):
  """(d hidden, d weight), block by block over the vocabulary.

  `dlogits_fn(hidden, w_blk, labels, stats, g, cols)` gives the [tokens, bv] gradient of the
  block's logits (recomputed). It is cast to the activation dtype before both matmuls, which
  accumulate in `acc`. Without `cast`, both gradients come back in `acc`.

  With `bn`, each vocabulary block is walked in tiles of `bn` tokens: `dlogits_fn` sees the
  tile's rows of `hidden`, `labels`, `stats` (a pytree of [tokens, ...] arrays) and `g`, and the
  block's d weight is accumulated over the tiles before it is written. With `skip(r0, j)` too (a
  bool scalar for the tile at rows r0.. of vocabulary block j), a tile for which it is True is
  not computed (`lax.cond`: its three matmuls do not run). The clamped last blocks overlap their
  predecessors: a row and a column count once in d hidden; an overlapping vocabulary block's
  d weight columns are written again with its own values.
  """
  n, v = hidden.shape[0], vocab_size(weight, vd)
  tiled = bn is not None
  # d weight from the hidden states with their non-finite entries as 0: a token whose hidden
  # state holds a NaN or an infinity has logits that are not finite, and where its op gives
  # it no gradient (a lost or masked token: d logits 0) its row added 0 * NaN to every column
  # of d weight, the head that every token shares. Where its d logits are not 0 (NaN), NaN
  # still reaches d weight.
  hidden_w = bw.finite_or_zero(hidden)

  def tile(c0, w_blk, col_own, r0, row_own, carry):
    dh, dw_blk = carry
    rows = (lambda a: lax.dynamic_slice_in_dim(a, r0, bn)) if tiled else (lambda a: a)
    h = rows(hidden)
    st = jax.tree.map(rows, stats) if tiled else stats
    d = dlogits_fn(h, w_blk, rows(labels), st, rows(g), c0 + jnp.arange(bv)).astype(hidden.dtype)
    # d hidden counts each column once; with tiles, d weight counts each row once.
    own = col_own if row_own is None else row_own[:, None] & col_own
    d_own = jnp.where(own, d, jnp.zeros((), d.dtype))
    dh_rows = matmul(d_own, w_blk, ((1,), (0,)) if vd else ((1,), (1,)), acc)
    if row_own is not None:
      d = jnp.where(row_own[:, None], d, jnp.zeros((), d.dtype))
    # [bv, d] = d^T @ hidden, or [d, bv] = hidden^T @ d
    h_w = rows(hidden_w)
    dw_tile = matmul(d, h_w, ((0,), (0,)), acc) if vd else matmul(h_w, d, ((0,), (0,)), acc)
    if not tiled:
      return dh + dh_rows, dw_tile
    dh = lax.dynamic_update_slice_in_dim(dh, rows(dh) + dh_rows, r0, 0)
    return dh, dw_blk + dw_tile

  def body(j, carry):
    dh, dw = carry
    c0 = bw.block_start(j, v, bv)
    w_blk = weight_block(weight, c0, bv, vd)
    col_own = bw.owned(j, c0, bv)
    if not tiled:
      dh, dw_blk = tile(c0, w_blk, col_own, 0, None, (dh, None))
    else:

      def token_block(i, carry):
        r0 = bw.block_start(i, n, bn)
        run = functools.partial(tile, c0, w_blk, col_own, r0, bw.owned(i, r0, bn))
        return run(carry) if skip is None else lax.cond(skip(r0, j), lambda c: c, run, carry)

      dh, dw_blk = bw.fori_blocks(bw.num_blocks(n, bn), token_block,
                                  (dh, jnp.zeros_like(w_blk, acc)))
    dw = lax.dynamic_update_slice_in_dim(dw, dw_blk.astype(dw.dtype), c0, axis=0 if vd else 1)
    return dh, dw

  init = (jnp.zeros_like(hidden, acc), jnp.zeros_like(weight, None if cast else acc))
  dh, dw = bw.fori_blocks(bw.num_blocks(v, bv), body, init)
  return (dh.astype(hidden.dtype) if cast else dh), dw


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


def walk(hidden, weight, labels, *, vd: bool, block_size, axis_name, max_block=None):
  """(labels local to this shard, the whole vocabulary's size, the vocabulary block) of an XLA
  walk: `block_size`, or one sized to keep a [tokens, block] tile small (`default_block`), at
  most `max_block`."""
  v = vocab_size(weight, vd)
  labels, vocab = shard_labels(labels, weight, vd, axis_name)
  bv = default_block(hidden.shape[0], v, jax.default_backend())
  bv = bw.pick_block(v, block_size, bv if max_block is None else min(bv, max_block))
  return labels, vocab, bv


def run_xla(make, stats_fn, dlogits_fn, hidden, weight, labels, *rest, vd: bool, block_size,
            axis_name, softcap=None, inv_t=1.0):
  """An op's blockwise XLA implementation on (hidden, weight, labels, *rest): its
  `make(stats, dlogits, *, bv, vd, axis_name)` given `stats_fn(hidden, weight, labels, *, bv,
  vd, softcap, inv_t)` and `dlogits_fn(..., softcap, inv_t)`, with this shard's labels and the
  block of `walk`."""
  labels, _, bv = walk(hidden, weight, labels, vd=vd, block_size=block_size, axis_name=axis_name)
  cfg = dict(softcap=softcap, inv_t=inv_t)
  f = make(functools.partial(stats_fn, bv=bv, vd=vd, **cfg),
           functools.partial(dlogits_fn, **cfg), bv=bv, vd=vd, axis_name=axis_name)
  return f((hidden, weight), labels, *rest)


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


def on_first_shard(outputs, axis_name):
  """`outputs` (a pytree) on shard 0 of `axis_name`, 0 elsewhere (unchanged without `axis_name`).

  Their psum (`psum_outputs`) is the output, exactly, and psum's transpose hands every shard the
  output's cotangent with or without check_vma (without it, shard_map divides a replicated
  output's cotangent by the axis size and the transpose of psum sums it back), so the backward
  sees the same cotangent as on one device.
  """
  if axis_name is None:
    return outputs
  first = lax.axis_index(axis_name) == 0
  return jax.tree.map(lambda o: jnp.where(first, o, 0.0), outputs)


def psum_outputs(f, axis_name):
  """`run((hidden, weight), *args)`: `f` of the typed-alike inputs (`typed_alike`), its
  outputs psummed over `axis_name` (see `on_first_shard`)."""

  def run(x, *args):
    out = f(typed_alike(*x), *args)
    return out if axis_name is None else lax.psum(out, axis_name)

  return run
