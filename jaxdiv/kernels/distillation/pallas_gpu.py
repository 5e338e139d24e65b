"""Distillation divergences through the Pallas row-block kernels (Triton on GPU)."""

from __future__ import annotations

import functools

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels._pallas_gpu import DEFAULT_BLOCK
from jaxdiv.kernels.distillation import pallas_kernel
from jaxdiv.kernels.distillation import xla


def divergence(student_logits, teacher_logits, valid, *, divergence, beta, inv_t,
               block_size=None, interpret=False):
  bn, bv = bw.tile_sizes(student_logits.shape, block_size, DEFAULT_BLOCK)
  kw = dict(bn=bw.pow2(bn), bv=bw.pow2(bv), interpret=interpret)
  cfg = dict(divergence=divergence, beta=beta, inv_t=inv_t)
  f = xla.make(functools.partial(pallas_kernel.stats, **kw, **cfg),
               functools.partial(pallas_kernel.grad, **kw), **cfg)
  return f((student_logits, teacher_logits), None, valid)
