"""Fused linear cross-entropy with Pallas kernels for the logits tiles (Triton on GPU).

The forward pass is one kernel (matmul tiles folded into an online logsumexp, nothing stored).
The backward walks vocabulary chunks: a kernel recomputes each chunk's logits and writes their
softmax gradient in the activation dtype, then two XLA matmuls (cuBLAS) form d_hidden and the
chunk's d_weight, as in `_linear_blocks.backward`. With `axis_name` the kernels see this shard's
weight and shifted labels; the statistics are combined across shards outside them
(`chunked_xla.make`).
"""

from __future__ import annotations

import functools

from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels.linear_cross_entropy import chunked_xla
from jaxdiv.kernels.linear_cross_entropy import pallas_kernel

# Tile of the kernels (tokens, vocabulary, model dimension), vocabulary splits of the forward
# grid, warps per program, and the vocabulary chunk of the backward (one [tokens, chunk]
# gradient at a time), as chosen by `bench/kernels.py --only tune` at the Gemma-2-2B head
# (bench/README.md has the measurement).
TILE = (128, 256, 64)
SPLITS = 4
NUM_WARPS = 8
CHUNK = 8192


def linear_cross_entropy(hidden, weight, labels, valid, *, vd: bool, label_smoothing=0.0,
                         z_loss=0.0, block_size=None, interpret=False, tile=TILE,
                         splits=SPLITS, num_warps=NUM_WARPS, axis_name=None, softcap=None):
  labels, vocab, (bn, bv, bk), chunk = pg.walk(
      hidden, weight, labels, vd=vd, tile=tile, chunk=CHUNK, block_size=block_size,
      axis_name=axis_name, interpret=interpret)
  kw = dict(bn=bn, bv=bv, bk=bk, num_warps=num_warps, interpret=interpret, softcap=softcap)

  def block_grad(hidden, w_blk, labels, stats, g, cols, softcap=None, **cfg):
    del softcap  # already in `kw`
    return pallas_kernel.dlogits(hidden, w_blk, labels, stats.lse, g, cols, **kw, **cfg)

  f = chunked_xla.make(
      functools.partial(pallas_kernel.stats, splits=splits, vd=vd, **kw), block_grad, bv=chunk,
      vd=vd, vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss, axis_name=axis_name)
  return f((hidden, weight), labels.astype("int32"), valid)
