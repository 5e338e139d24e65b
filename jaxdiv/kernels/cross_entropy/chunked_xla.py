"""Cross-entropy blockwise over tokens and vocabulary, with an online logsumexp.

No intermediate larger than one [token block, vocab block] tile is formed: the forward walks
the vocabulary once per token block keeping (max, sum, z[y], sum z); the backward recomputes
each tile's softmax from `lse` and writes the gradient tile into place.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels import _blockwise as bw

DEFAULT_BLOCK = (256, 4096)  # (tokens, vocab)


def _blocks(shape, block_size):
  n, v = shape
  bn, bv = (None, None) if block_size is None else (
      (block_size, block_size) if isinstance(block_size, int) else block_size)
  return bw.pick_block(n, bn, DEFAULT_BLOCK[0]), bw.pick_block(v, bv, DEFAULT_BLOCK[1])


def _stats(z, labels, *, bn, bv):
  n, v = z.shape

  def row_block(i, out):
    r0 = bw.block_start(i, n, bn)
    lab = lax.dynamic_slice_in_dim(labels, r0, bn)

    def col_block(j, carry):
      state, z_label, z_sum = carry
      c0 = bw.block_start(j, v, bv)
      tile = lax.dynamic_slice(z, (r0, c0), (bn, bv)).astype(jnp.float32)
      own = bw.owned(j, c0, bv)
      zl, zs = bw.label_and_sum(tile, lab, c0 + jnp.arange(bv), own)
      return bw.lse_update(state, tile, own), z_label + zl, z_sum + zs

    zeros = jnp.zeros((bn,), jnp.float32)
    state, z_label, z_sum = bw.fori_blocks(
        bw.num_blocks(v, bv), col_block, (bw.lse_init((bn,)), zeros, zeros))
    new = (bw.lse_finish(state), z_label, z_sum)
    return tuple(lax.dynamic_update_slice_in_dim(o, x, r0, 0) for o, x in zip(out, new))

  init = tuple(jnp.zeros((n,), jnp.float32) for _ in range(3))
  return bw.CeStats(*bw.fori_blocks(bw.num_blocks(n, bn), row_block, init))


def _grad(z, labels, lse, g, *, bn, bv, **cfg):
  n, v = z.shape

  def tile_grad(k, dz):
    i, j = k // bw.num_blocks(v, bv), k % bw.num_blocks(v, bv)
    r0, c0 = bw.block_start(i, n, bn), bw.block_start(j, v, bv)
    tile = lax.dynamic_slice(z, (r0, c0), (bn, bv)).astype(jnp.float32)
    rows = functools.partial(lax.dynamic_slice_in_dim, start_index=r0, slice_size=bn)
    d = bw.cross_entropy_dlogits(tile, rows(lse), rows(labels), c0 + jnp.arange(bv), rows(g),
                                 **cfg)
    return lax.dynamic_update_slice(dz, d.astype(dz.dtype), (r0, c0))

  total = bw.num_blocks(n, bn) * bw.num_blocks(v, bv)
  return (bw.fori_blocks(total, tile_grad, jnp.zeros_like(z)),)


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None):
  bn, bv = _blocks(logits.shape, block_size)
  cfg = dict(vocab=logits.shape[-1], label_smoothing=label_smoothing, z_loss=z_loss)
  f = bw.masked_loss_vjp(
      functools.partial(_stats, bn=bn, bv=bv),
      functools.partial(_grad, bn=bn, bv=bv, **cfg),
      functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels, valid)
