"""The truth for distillation divergences: plain jnp over log-softmax, no custom VJP."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _fallback
from jaxdiv import _numerics


def divergence(student_logits, teacher_logits, valid, *, divergence="forward_kl", beta=0.5,
               temperature=1.0):
  """Per-token divergence between softmax(teacher / T) and softmax(student / T); 0 where not
  `valid`. The teacher is under `stop_gradient`."""
  dtype = jnp.promote_types(student_logits.dtype, jnp.float32)
  zs = student_logits.astype(dtype) / temperature
  zt = jax.lax.stop_gradient(teacher_logits).astype(dtype) / temperature
  # A row with a NaN or +inf logit (either side) is a constant, as in the kernels: its
  # student's tangents are zeroed before the log-softmax, whose derivative meets it as 0 * NaN.
  lost = _numerics.lost_rows(jax.lax.stop_gradient(_numerics.logsumexp(zs, axis=-1))) | (
      _numerics.lost_rows(_numerics.logsumexp(zt, axis=-1)))
  zs = _fallback.tangent_if(jnp.logical_not(lost)[:, None], zs)
  ls = _numerics.log_softmax(zs)
  lt = _numerics.log_softmax(zt)

  def kl(lp, lq):  # KL(p || q) from log-probabilities, 0 log 0 = 0
    p = jnp.exp(lp)
    return jnp.sum(_numerics.mul_log(p, lp) - _numerics.mul_log(p, lq), axis=-1)

  if divergence == "forward_kl":
    out = kl(lt, ls)
  elif divergence == "reverse_kl":
    out = kl(ls, lt)
  else:
    lm = _numerics.log_add_exp(lt + jnp.log(jnp.asarray(beta, dtype)),
                               ls + jnp.log(jnp.asarray(1 - beta, dtype)))
    out = beta * kl(lt, lm) + (1 - beta) * kl(ls, lm)
  # (and its value's tangent zeroed too: forward mode met the NaN softmax as 0 * NaN)
  out = _fallback.tangent_if(jnp.logical_not(lost), out)
  return jnp.where(valid, jnp.where(valid, out, 0.0), 0.0)
