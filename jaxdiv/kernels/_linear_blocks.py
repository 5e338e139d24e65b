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


def fold(hidden, weight, body, init, *, bv: int, vd: bool, acc=jnp.float32, softcap=None,
         inv_t=1.0):
  """Folds `body(carry, z, c0, own)` over the vocabulary blocks of `hidden @ weight`.

  `z` [tokens, bv] is the block's logits (accumulated in `acc`) capped and scaled,
  `softcap(x) / T`; `c0` its first column; `own` [bv] the columns it counts (the clamped last
  block overlaps its predecessor).
  """
  v = vocab_size(weight, vd)

  def step(j, carry):
    c0 = bw.block_start(j, v, bv)
    x = block_logits(hidden, weight_block(weight, c0, bv, vd), vd, acc)
    return body(carry, _softcap.apply(x, softcap, inv_t), c0, bw.owned(j, c0, bv))

  return bw.fori_blocks(bw.num_blocks(v, bv), step, init)


def backward(hidden, weight, labels, stats, g, *, bv, vd, dlogits_fn, acc=jnp.float32):
  """(d hidden, d weight), block by block over the vocabulary.

  `dlogits_fn(hidden, w_blk, labels, stats, g, cols)` gives the [tokens, bv] gradient of the
  block's logits (recomputed). It is cast to the activation dtype before both matmuls, which
  accumulate in `acc`.
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
    dh = dh + matmul(d_own, w_blk, ((1,), (0,)) if vd else ((1,), (1,)), acc)
    # [bv, d] = d^T @ hidden, or [d, bv] = hidden^T @ d
    dw_blk = (matmul(d, hidden, ((0,), (0,)), acc) if vd
              else matmul(hidden, d, ((0,), (0,)), acc))
    dw = lax.dynamic_update_slice_in_dim(dw, dw_blk.astype(dw.dtype), c0, axis=0 if vd else 1)
    return dh, dw

  init = (jnp.zeros_like(hidden, acc), jnp.zeros_like(weight))
  dh, dw = bw.fori_blocks(bw.num_blocks(v, bv), body, init)
  return dh.astype(hidden.dtype), dw


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


def walk(hidden, weight, labels, *, vd: bool, block_size, axis_name):
  """(labels local to this shard, the whole vocabulary's size, the vocabulary block) of an XLA
  walk: `block_size`, or one sized to keep a [tokens, block] tile small (`default_block`)."""
  v = vocab_size(weight, vd)
  labels, vocab = shard_labels(labels, weight, vd, axis_name)
  bv = bw.pick_block(v, block_size, default_block(hidden.shape[0], v, jax.default_backend()))
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
