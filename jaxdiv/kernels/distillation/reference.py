"""The truth for distillation divergences: plain jnp over log-softmax, no custom VJP."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _numerics


def divergence(student_logits, teacher_logits, valid, *, divergence="forward_kl", beta=0.5,
               temperature=1.0):
  """Per-token divergence between softmax(teacher / T) and softmax(student / T); 0 where not
  `valid`. The teacher is under `stop_gradient`."""
  dtype = jnp.promote_types(student_logits.dtype, jnp.float32)
  ls = _numerics.log_softmax(student_logits.astype(dtype) / temperature)
  lt = _numerics.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(dtype) / temperature)

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
  return jnp.where(valid, jnp.where(valid, out, 0.0), 0.0)
