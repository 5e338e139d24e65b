"""Cross-entropy blockwise over tokens and vocabulary, with an online logsumexp.

No intermediate larger than one [token block, vocab block] tile is formed: the forward walks
the vocabulary once per token block keeping (max, sum, z[y], sum z); the backward recomputes
each tile's softmax from `lse` and writes the gradient tile into place.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdiv.kernels import _blockwise as bw

DEFAULT_BLOCK = (256, 4096)  # (tokens, vocab)


def _stats(z, labels, *, bn, bv):
  def body(carry, tiles, rows, cols, own):
    state, z_label, z_sum = carry
    zl, zs = bw.label_and_sum(tiles[0], rows[0], cols, own)
    return bw.lse_update(state, tiles[0], own), z_label + zl, z_sum + zs

  def init(b):
    return bw.lse_init((b,)), jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.float32)

  def finish(carry, rows):
    return bw.lse_finish(carry[0]), carry[1], carry[2]

  return bw.CeStats(*bw.tiled_reduce((z,), (labels,), bn=bn, bv=bv, init=init, body=body,
                                     finish=finish))


def _grad(z, labels, stats, g, *, bn, bv, **cfg):
  def fn(tiles, rows, cols):
    labels, lse, g = rows
    return bw.cross_entropy_dlogits(tiles[0], lse, labels, cols, g, **cfg)

  return (bw.tiled_map((z,), (labels, stats.lse, g), z.dtype, bn=bn, bv=bv, fn=fn),)


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None):
  bn, bv = bw.tile_sizes(logits.shape, block_size, DEFAULT_BLOCK)
  cfg = dict(vocab=logits.shape[-1], label_smoothing=label_smoothing, z_loss=z_loss)
  f = bw.masked_loss_vjp(
      functools.partial(_stats, bn=bn, bv=bv),
      functools.partial(_grad, bn=bn, bv=bv, **cfg),
      functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels, valid)
