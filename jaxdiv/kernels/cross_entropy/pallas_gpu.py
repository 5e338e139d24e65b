"""Cross-entropy through the Pallas row-block kernels (compiled by Triton on GPU)."""

from __future__ import annotations

import functools

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels.cross_entropy import pallas_kernel

DEFAULT_BLOCK = (4, 2048)  # (rows per program, vocabulary tile): powers of two for Triton


def _pow2(x: int) -> int:
  return 1 << max(0, int(x) - 1).bit_length()


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None,
                  interpret=False):
  bn, bv = DEFAULT_BLOCK if block_size is None else (
      (DEFAULT_BLOCK[0], block_size) if isinstance(block_size, int) else block_size)
  bn, bv = _pow2(bn), _pow2(min(bv, _pow2(logits.shape[-1])))
  cfg = dict(vocab=logits.shape[-1], label_smoothing=label_smoothing, z_loss=z_loss)
  kw = dict(bn=bn, bv=bv, interpret=interpret)
  f = bw.masked_loss_vjp(
      functools.partial(pallas_kernel.stats, **kw),
      lambda z, labels, lse, g: (pallas_kernel.grad(z, labels, lse, g, **kw, **cfg),),
      functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels.astype("int32"), valid)
