"""Fused token log-probabilities with Pallas kernels for the logits tiles (Triton on GPU).

The forward pass is one kernel (`pallas_kernel.stats`); the backward walks vocabulary chunks, a
kernel writing each chunk's logits gradient and two XLA matmuls forming d hidden and the chunk's
d weight (`_linear_blocks.backward`). With `axis_name` the kernels see this shard's weight and
shifted labels; the states merge across shards outside them (`chunked_xla.make`). Tile sizes
are the fused cross-entropy's. `implementation=None` does not pick these kernels (see
`api.py`); bench/README.md records where they have been compiled and timed.
"""

from __future__ import annotations

import functools

from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels.linear_cross_entropy import pallas_gpu as lce_pallas
from jaxdiv.kernels.token_log_probs import chunked_xla
from jaxdiv.kernels.token_log_probs import pallas_kernel


def token_log_probs(hidden, weight, labels, valid, *, vd: bool, softcap=None, inv_t=1.0,
                    block_size=None, axis_name=None, interpret=False, tile=lce_pallas.TILE,
                    splits=lce_pallas.SPLITS, num_warps=lce_pallas.NUM_WARPS):
  labels, _, (bn, bv, bk), chunk = pg.walk(
      hidden, weight, labels, vd=vd, tile=tile, chunk=lce_pallas.CHUNK, block_size=block_size,
      axis_name=axis_name, interpret=interpret)
  kw = dict(bn=bn, bv=bv, bk=bk, num_warps=num_warps, interpret=interpret, softcap=softcap,
            inv_t=inv_t)

  def block_grad(hidden, w_blk, labels, stats, g, cols, *, vd):
    return pallas_kernel.dlogits(hidden, w_blk, labels, stats.lse, stats.entropy, *g, cols,
                                 vd=vd, **kw)

  f = chunked_xla.make(functools.partial(pallas_kernel.stats, splits=splits, vd=vd, **kw),
                       block_grad, bv=chunk, vd=vd, axis_name=axis_name)
  return f((hidden, weight), labels.astype("int32"), valid)
