"""Cross-entropy through the Pallas row-block kernels (compiled by Triton on GPU)."""

from __future__ import annotations

import functools

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels._pallas_gpu import DEFAULT_BLOCK
from jaxdiv.kernels.cross_entropy import pallas_kernel


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None,
                  interpret=False):
  bn, bv = bw.tile_sizes(logits.shape, block_size, DEFAULT_BLOCK)
  bn, bv = bw.pow2(bn), bw.pow2(bv)
  cfg = dict(vocab=logits.shape[-1], label_smoothing=label_smoothing, z_loss=z_loss)
  kw = dict(bn=bn, bv=bv, interpret=interpret)
  f = bw.masked_loss_vjp(
      functools.partial(pallas_kernel.stats, **kw),
      lambda z, labels, stats, g: (pallas_kernel.grad(z, labels, stats.lse, g, **kw, **cfg),),
      functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels.astype("int32"), valid)
