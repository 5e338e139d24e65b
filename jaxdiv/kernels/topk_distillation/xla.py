"""The materialising implementation of the top-k student statistics: the full logits, their
lse and a gather (gradient by autodiff)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.topk_distillation import chunked_xla


def student_stats(hidden, weight, indices, *, vd: bool, softcap=None, inv_t=1.0,
                  block_size=None, axis_name=None):
  """The materialising version: full logits, then lse and a gather (autodiff)."""
  del block_size
  acc = lb.acc_dtype(hidden, weight)
  z = _softcap.apply(lb.block_logits(hidden, weight, vd, acc), softcap, inv_t)
  lse = _numerics.logsumexp(z, axis=-1, axis_name=axis_name)
  if axis_name is None:
    return lse, jnp.take_along_axis(z, jnp.clip(indices, 0, z.shape[-1] - 1), axis=-1)
  local, _ = lb.shard_labels(indices, weight, vd, axis_name)
  return lse, _numerics.psum(chunked_xla.gather(z, local, 0), axis_name)
