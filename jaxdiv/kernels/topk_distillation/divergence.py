"""The top-k divergence itself, on per-token [tokens, k] arrays: the student's log-probabilities
at the teacher's indices (from its logits' lse and the gathered logits) against the teacher's
stored log-probabilities, binned with a tail or renormalised. Plain jnp; gradients by autodiff
reach the student's gathered logits and lse, from which the kernels' VJPs go on."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _numerics

DIVERGENCES = ("forward_kl", "reverse_kl", "js")
TAILS = ("bin", "renormalize")
# Stored teacher log-probabilities whose mass exceeds 1 by more than this are an error (NaN);
# up to it, rounding of the stored values is forgiven (the tail is then 0).
MASS_TOLERANCE = 1e-3


def _log1m_exp(a):
  """log(1 - exp(a)) for a <= 0, -inf at a >= 0 with a zero gradient there (double where).

  Trap avoided: log1p(-exp(a)) loses everything near a = 0 and log(-expm1(a)) near -inf; each
  is used on its side of -log 2 (Maechler, 2012).
  """
  empty = a >= 0
  a = jnp.where(empty, -1.0, a)
  out = jnp.where(a > -jnp.log(2.0), jnp.log(-jnp.expm1(a)), _numerics.log1p(-jnp.exp(a)))
  return jnp.where(empty, -jnp.inf, out)


def _lse(x):
  """logsumexp over the last axis: -inf (zero gradient) for an all -inf row."""
  m = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  s = jnp.sum(jnp.exp(x - m), axis=-1)
  return jnp.where(s > 0, jnp.log(jnp.where(s > 0, s, 1.0)) + m[..., 0], -jnp.inf)


def _rel(p, log_p, log_q):
  """p (log p - log q), 0 where p = 0 (scipy's rel_entr), NaN-free gradients there."""
  zero = p == 0
  return jnp.where(zero, 0.0, p * jnp.where(zero, 0.0, log_p - log_q))


def bins(student_log_probs, teacher_log_probs, tail: str):
  """(log q_student, log p_teacher) over the bins: the k entries and a tail ("bin"), or the k
  entries renormalised ("renormalize"), each [tokens, k (+1)].

  The student's tail 1 - sum q_I is formed from its k probabilities, each exact to a relative
  eps, so it is known only to about k eps: it is floored there. Without the floor, a student
  certain of its top entries (tail below eps) would get a tail of exactly 0 from rounding and
  an infinite forward KL against any teacher tail; with it, the loss stays finite and such a
  student gets no gradient through its tail (the k entries' terms still pull it).
  """
  ls, lt = student_log_probs, teacher_log_probs
  if tail == "renormalize":
    return ls - _lse(ls)[..., None], lt - _lse(lt)[..., None]
  floor = jnp.log(ls.shape[-1] * jnp.finfo(ls.dtype).eps).astype(ls.dtype)
  s_tail = jnp.maximum(_log1m_exp(_lse(ls)), floor)
  t_tail = _log1m_exp(_lse(lt))
  return (jnp.concatenate([ls, s_tail[..., None]], -1),
          jnp.concatenate([lt, t_tail[..., None]], -1))


def divergence(ls, lt, *, divergence: str, beta: float):
  """Per-token divergence between binned log-distributions (teacher `lt`, student `ls`):
  forward KL(p_t || q_s), reverse KL(q_s || p_t), or JS with beta as `distillation_divergence`:
  beta KL(p_t || m) + (1 - beta) KL(q_s || m), m = beta p_t + (1 - beta) q_s."""
  ps, pt = jnp.exp(ls), jnp.exp(lt)
  if divergence == "forward_kl":
    return jnp.sum(_rel(pt, lt, ls), -1)
  if divergence == "reverse_kl":
    return jnp.sum(_rel(ps, ls, lt), -1)
  both = (ps == 0) & (pt == 0)  # log m = -inf there; keep logaddexp's gradient finite
  a = jnp.where(both, 0.0, lt) + jnp.log(jnp.asarray(beta, ls.dtype))
  b = jnp.where(both, 0.0, ls) + jnp.log(jnp.asarray(1.0 - beta, ls.dtype))
  lm = jnp.logaddexp(a, b)
  return jnp.sum(beta * _rel(pt, lt, lm) + (1.0 - beta) * _rel(ps, ls, lm), -1)


def bad_teacher(indices, teacher_log_probs, vocab: int):
  """[tokens] bool: an index outside [0, vocab), a repeated index, or stored log-probabilities
  whose mass exceeds 1 (beyond `MASS_TOLERANCE`), or a NaN among them."""
  out_of_range = jnp.any((indices < 0) | (indices >= vocab), -1)
  s = jnp.sort(indices, -1)
  repeated = jnp.any(s[..., 1:] == s[..., :-1], -1)
  mass = _lse(teacher_log_probs.astype(jnp.float32))
  return out_of_range | repeated | ~(mass <= jnp.log1p(MASS_TOLERANCE))


def loss_from_stats(lse, u, teacher_log_probs, valid, bad, *, divergence_name, tail, beta):
  """Per-token loss from the student's lse [tokens] and gathered scaled logits u [tokens, k]:
  0 (and no gradient) where not `valid`, NaN where `bad`."""
  lt = jax.lax.stop_gradient(teacher_log_probs.astype(u.dtype))
  ls = u - lse[..., None]
  out = divergence(*bins(ls, lt, tail), divergence=divergence_name, beta=beta)
  out = jnp.where(valid, jnp.where(valid, out, 0.0), 0.0)
  return jnp.where(valid & bad, jnp.nan, out)
