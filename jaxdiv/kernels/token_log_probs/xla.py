"""The materialising implementation of the token log-probabilities: one matmul (float32
accumulation, inputs in their own dtype) to the full [tokens, vocab] logits, then the
reference's formulas (gradient by autodiff). Fast for small vocabularies."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels.token_log_probs.reference import from_logits


def token_log_probs(hidden, weight, labels, valid, *, vd: bool, softcap=None, inv_t=1.0,
                    block_size=None, axis_name=None):
  """The materialising implementation: one matmul (float32 accumulation, inputs in their own
  dtype) to the full [tokens, vocab] logits, then `from_logits` (autodiff)."""
  del block_size
  acc = jnp.promote_types(jnp.result_type(hidden, weight), jnp.float32)
  x = lax.dot_general(hidden, weight, (((1,), (1 if vd else 0,)), ((), ())),
                      precision=lax.Precision.HIGHEST, preferred_element_type=acc)
  return from_logits(x, labels, valid, softcap=softcap, inv_t=inv_t, axis_name=axis_name)

