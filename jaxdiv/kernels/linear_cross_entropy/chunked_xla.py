"""Fused linear cross-entropy, blockwise over the vocabulary, with an lse-only residual.

Forward: for each vocabulary block, logits = hidden @ W_block (float32 accumulation) feed an
online logsumexp; only (lse, z[y], sum z) per token survive. Backward: each block's logits are
recomputed, its softmax gradient is cast to the activation dtype, then
`d_hidden += d_logits @ W_block^T` (float32 accumulator) and `d_W_block = hidden^T @ d_logits`
is written into place, so no [d, vocab] accumulator is carried and no [tokens, vocab] array
exists. That is 8·N·D·V FLOPs (2 forward, 6 backward) against the 6·N·D·V of computing the
gradients during the forward pass (Liger-Kernel): the price of per-token losses with arbitrary
cotangents and of a residual that survives rematerialisation.

Vocabulary parallelism (`axis_name`, inside `shard_map`): each shard runs the same passes on its
slice of the weight with labels shifted to its first column; the per-token statistics are
merged across shards (`combine_stats`) inside the forward, and the backward recomputes the local
logits against the global lse. Only [tokens] vectors cross devices.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap


def _stats(hidden, weight, labels, *, bv, vd, softcap=None):
  def body(carry, z, c0, own):
    state, z_label, z_sum = carry
    zl, zs = bw.label_and_sum(z, labels, c0 + jnp.arange(bv), own)
    return bw.lse_update(state, z, own), z_label + zl, z_sum + zs

  # Typed like `hidden` (see `_linear_blocks.typed_alike`), so that under shard_map's
  # replication checks the loop's carry has the type of the logits it accumulates.
  zeros = jnp.zeros_like(hidden[:, 0], jnp.float32)
  state, z_label, z_sum = lb.fold(hidden, weight, body,
                                  (bw.Lse(zeros - jnp.inf, zeros), zeros, zeros), bv=bv, vd=vd,
                                  softcap=softcap)
  return bw.CeStats(bw.lse_finish(state), z_label, z_sum)


def xla_dlogits(hidden, w_blk, labels, stats, g, cols, *, vd, softcap=None, **cfg):
  """The gradient of one block's logits, recomputed from `hidden` and the block of weights
  (through the cap c tanh(x / c) when `softcap` is set)."""
  x = lb.block_logits(hidden, w_blk, vd)
  d = bw.cross_entropy_dlogits(_softcap.apply(x, softcap), stats.lse, labels, cols, g, **cfg)
  return d if softcap is None else d * _softcap.derivative(x, softcap)


def combine_stats(stats: bw.CeStats, axis_name) -> bw.CeStats:
  """Whole-vocabulary statistics from each shard's: the lses merge through their max (pmax,
  under stop_gradient) and the psum of the shifted exponentials, the label logit and the row
  sum through psum (the label's shard contributes it, the others 0)."""
  lse = bw.lse_finish(bw.lse_psum(bw.Lse(stats.lse, jnp.ones_like(stats.lse)), axis_name))
  return bw.CeStats(lse, _numerics.psum(stats.z_label, axis_name),
                    _numerics.psum(stats.z_sum, axis_name))


def make(stats_fn, dlogits_fn, *, bv, vd, vocab, label_smoothing, z_loss, axis_name=None,
         softcap=None):
  """The fused loss `f((hidden, weight), labels, valid)` from a stats pass and a block
  gradient; shared by the XLA and the Pallas implementations.

  With `axis_name`, `stats_fn` and `dlogits_fn` see this shard's weight and shifted labels
  (`_linear_blocks.shard_labels`) and `vocab` is the global size: the statistics are combined
  across shards in the forward, and the backward uses the global lse.
  """
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)
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
                         z_loss=0.0, block_size=None, axis_name=None, softcap=None):
  labels, vocab, bv = lb.walk(hidden, weight, labels, vd=vd, block_size=block_size,
                              axis_name=axis_name)
  f = make(functools.partial(_stats, bv=bv, vd=vd, softcap=softcap), xla_dlogits, bv=bv, vd=vd,
           vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss, axis_name=axis_name,
           softcap=softcap)
  return f((hidden, weight), labels, valid)
