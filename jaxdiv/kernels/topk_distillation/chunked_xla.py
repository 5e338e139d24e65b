"""The student's statistics for top-k distillation from a fused linear head, blockwise.

Per token: the lse of z = softcap(h W) / T over the whole vocabulary and the k logits
u = z[indices], formed one vocabulary block at a time (each block contributes the indices that
fall in its columns, by a [tokens, k] gather from the block; no [tokens, k, d] gather of the
weight and no [tokens, k, block] comparison exists).
Backward: with cotangents g_lse and g_u, each block's raw logits gradient is
(g_lse softmax(z) + scatter(g_u)) dz/dx, recomputed, then multiplied into d hidden and the
block of d weight (`kernels._linear_blocks.backward`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap


def gather(z, indices, c0, own=None):
  """[rows, k]: the block `z` [rows, b] (columns c0 .. c0 + b) at `indices`, 0 for indices
  outside the block (or not owned by it). A gather at the clipped local index, masked: no
  [rows, k, b] comparison is formed."""
  b = z.shape[-1]
  local = indices - c0
  inside = (local >= 0) & (local < b)
  if own is not None:  # the clamped last block owns only its columns >= j * b
    inside = inside & (local >= b - jnp.sum(own))
  picked = jnp.take_along_axis(z, jnp.clip(local, 0, b - 1), axis=-1)
  return jnp.where(inside, picked, 0.0)


def _stats(hidden, weight, indices, *, bv, vd, softcap, inv_t):
  acc = lb.acc_dtype(hidden, weight)

  def body(carry, z, c0, own):
    st, u = carry
    return bw.lse_update(st, z, own), u + gather(z, indices, c0, own)

  zeros = jnp.zeros_like(hidden[:, 0], acc)  # typed like `hidden` under check_vma
  init = (bw.Lse(zeros - jnp.inf, zeros), jnp.zeros(indices.shape, acc) + zeros[:, None])
  return lb.fold(hidden, weight, body, init, bv=bv, vd=vd, acc=acc, softcap=softcap,
                 inv_t=inv_t)


def dlogits(x, cols, indices, lse, g, *, softcap, inv_t):
  """Gradient of one block's raw logits `x` from the cotangents g = (g_lse, g_u)."""
  g_lse, g_u = g
  z = _softcap.apply(x, softcap, inv_t)
  p = jnp.exp(z - bw.lse_shift(lse)[:, None])
  d = g_lse[:, None] * p + _gather_t(g_u, indices, cols)
  return d * _softcap.derivative(x, softcap, inv_t)


def _gather_t(g_u, indices, cols):
  """The transpose of `gather`: [rows, b] with g_u added at the columns of `indices` that
  lie in the block `cols` (contiguous), by a scatter-add of [rows, k] values."""
  b = cols.shape[0]
  local = indices - cols[0]
  inside = (local >= 0) & (local < b)
  rows = jnp.arange(indices.shape[0])[:, None]
  return jnp.zeros((indices.shape[0], b), g_u.dtype).at[rows, jnp.clip(local, 0, b - 1)].add(
      jnp.where(inside, g_u, 0.0))


def xla_dlogits(hidden, w_blk, indices, lse, g, cols, *, vd, softcap, inv_t):
  x = lb.block_logits(hidden, w_blk, vd, lb.acc_dtype(hidden, w_blk))
  return dlogits(x, cols, indices, lse, g, softcap=softcap, inv_t=inv_t)


def make(stats_fn, dlogits_fn, *, bv, vd, axis_name=None):
  """`f((hidden, weight), indices) -> (lse, u)` with a custom VJP (residual: inputs and lse).

  With `axis_name`, `indices` are local to this shard (`_linear_blocks.shard_labels`); the lse
  merges across shards and u is psummed (each index lives on one shard); the outputs are formed
  on shard 0 and psummed (`_linear_blocks.on_first_shard`).
  """

  def stats(hidden, weight, indices):
    st, u = stats_fn(hidden, weight, indices)
    return bw.lse_finish(bw.lse_psum(st, axis_name)), _numerics.psum(u, axis_name)

  @jax.custom_vjp
  def f(x, indices):
    return lb.on_first_shard(stats(*x, indices), axis_name)

  def fwd(x, indices):
    lse, u = stats(*x, indices)
    return lb.on_first_shard((lse, u), axis_name), (x, indices, lse)

  def bwd(res, g):
    x, indices, lse = res
    g = (g[0].astype(lse.dtype), g[1].astype(lse.dtype))
    grads = lb.backward(*x, indices, lse, g, bv=bv, vd=vd, acc=lb.acc_dtype(*x),
                        dlogits_fn=functools.partial(dlogits_fn, vd=vd))
    return grads, None

  f.defvjp(fwd, bwd)
  return lb.psum_outputs(f, axis_name)


def student_stats(hidden, weight, indices, *, vd: bool, softcap=None, inv_t=1.0,
                  block_size=None, axis_name=None):
  """(lse [tokens], u [tokens, k]) of z = softcap(hidden @ weight) / T, blockwise."""
  return lb.run_xla(make, _stats, xla_dlogits, hidden, weight, indices, vd=vd,
                    block_size=block_size, axis_name=axis_name, softcap=softcap, inv_t=inv_t)
