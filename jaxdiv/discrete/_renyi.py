"""Order-alpha family: Rényi divergence and entropy, Tsallis entropy and divergence, and the
Cichocki–Amari alpha-divergence.

All of them are functions of one quantity, the log of the power mean

    log S(t) = log sum_{i in supp p} p_i exp(t d_i),   t = alpha - 1,

with `d = log p - log q` (divergences) or `d = log p` (entropies, q = counting measure). The
limits alpha -> 1 (Shannon/KL) and alpha -> inf (max-log-ratio) are separate exact branches,
never a division by `alpha - 1`; near alpha = 1 the power mean is taken as `log1p(sum p expm1(t
d))`, which keeps full relative precision as t -> 0 where `log(S) / t` would cancel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _checks
from jaxdiv import _numerics
from jaxdiv.discrete import _common

# Below this max of |t*d| the expm1 form neither overflows nor cancels; above it the shifted
# log-sum-exp form is used.
_SMALL = 1.0


def _log_power_mean(p, log_p, d, t, axis, normalized):
  """log sum_{p>0} p exp(t d), or log E_p[exp(t d)] when `normalized` (p normalised by us).

  The support is where log p > -inf: from extreme logits p itself can underflow to 0 while
  p exp(t d) = exp(log p + t d) does not; the log-sum-exp branch keeps those terms.
  """
  s = log_p > -jnp.inf
  d = jnp.where(s, d, 0)  # -inf - -inf = NaN outside the support
  td = t * d
  # The max only chooses a branch and a shift: it carries no gradient.
  m = lax.stop_gradient(jnp.max(jnp.where(s, td, -jnp.inf), axis=axis, keepdims=True))
  # The expm1 form is for a power mean near 1 (every |t d| small); elsewhere it would cancel
  # (sum p^a - 1 with sum p^a tiny) and the log-sum-exp form is exact.
  spread = lax.stop_gradient(jnp.max(jnp.where(s, jnp.abs(td), 0), axis=axis))
  pos_inf = m == jnp.inf  # q = 0 where p > 0 with t > 0: S = inf exactly
  td = jnp.where(pos_inf, 0, td)
  z = jnp.sum(jnp.where(s, p, 0), axis=axis)

  small = jnp.sum(jnp.where(s, p * jnp.expm1(jnp.minimum(td, _SMALL)), 0), axis=axis)
  small = small / jnp.where(z > 0, z, 1) if normalized else small + (z - 1)
  ok = small > -1
  log_small = jnp.where(ok, jnp.log1p(jnp.where(ok, small, 0)), -jnp.inf)

  log_big = _numerics.logsumexp(log_p + td, axis=axis, where=s)
  if normalized:
    log_big = log_big - _numerics.safe_log(z)

  out = jnp.where(spread <= _SMALL, log_small, log_big)
  return jnp.where(jnp.squeeze(pos_inf, axis), jnp.inf, out)


def _max_log_ratio(log_p, d, axis):
  s = log_p > -jnp.inf
  out = jnp.max(jnp.where(s, d, -jnp.inf), axis=axis)
  return jnp.where(jnp.any(s, axis=axis), out, 0)


def _kl_terms(p, d, axis):
  return jnp.sum(_numerics.mul_log(p, jnp.where(p > 0, d, 0)), axis=axis)


def _static_alpha(alpha):
  """A concrete scalar alpha as a float (one branch is traced), else None (all are)."""
  if isinstance(alpha, jax.core.Tracer):
    return None
  a = np.asarray(alpha)
  return float(a) if a.ndim == 0 else None


def _half_variance(p, d, axis):
  """d/d(alpha) of D_alpha at alpha = 1: half the variance of the log-ratio under p."""
  s = p > 0
  d = jnp.where(s, d, 0)
  mean = jnp.sum(p * d, axis=axis, keepdims=True)
  return 0.5 * jnp.sum(jnp.where(s, p * (d - mean) ** 2, 0), axis=axis)


def _order_family(p, log_p, d, alpha, axis, normalized, general, at_one, at_inf,
                  one_slope=None):
  """Evaluates `general(log S, t)` with the exact branches `at_one()` and `at_inf(D_inf)`.

  A concrete scalar alpha traces only its branch; a traced or array alpha selects among all
  three with double-`where`s so that no branch leaks NaN into values or gradients.
  """
  a = _static_alpha(alpha)
  if a is not None:
    if a == 1:
      return at_one()
    if np.isinf(a):
      return at_inf(_max_log_ratio(log_p, d, axis))
    t = jnp.asarray(a - 1, p.dtype)
    return general(_log_power_mean(p, log_p, d, t, axis, normalized), t)
  alpha = jnp.asarray(alpha, p.dtype)
  alpha_b = jnp.squeeze(alpha, axis) if alpha.ndim else alpha
  is_one = alpha_b == 1
  is_inf = jnp.isinf(alpha_b)
  t = jnp.where(jnp.isinf(alpha) | (alpha == 1), 1, alpha - 1)
  t_b = jnp.squeeze(t, axis) if t.ndim else t
  gen = general(_log_power_mean(p, log_p, d, t, axis, normalized), t_b)
  one = at_one()
  if one_slope is not None:
    # Exactly at alpha = 1 the value is the limit; `(alpha - 1) * slope` is 0 there but gives
    # the derivative with respect to a traced alpha its true value instead of 0.
    one = one + (jnp.where(is_one, alpha_b, 1) - 1) * one_slope()
  return jnp.where(is_one, one, jnp.where(is_inf, at_inf(_max_log_ratio(log_p, d, axis)), gen))


def _check_alpha(alpha, lo=0):
  return _checks.check_real(alpha, "alpha", lo=lo, allow_inf=True)


def _alpha_for(alpha, prep):
  """A concrete scalar alpha stays a Python float (one traced branch); else a batch array."""
  if _static_alpha(alpha) is not None:
    return alpha
  return _common.batch_param(alpha, prep, prep.dists[0].prob.dtype)


def _family(arrays, alpha, *, axis, where, from_logits, general, at_one, at_inf,
            one_slope=None):
  """Prepares one (entropy: d = log p) or two (divergence: d = log p - log q) distributions
  and evaluates the order-alpha family on them; `at_one`/`one_slope` take (p, d, axis)."""
  _check_alpha(alpha)
  names = ("p", "q")[: len(arrays)]
  prep = _common.prepare(*arrays, names=names, axis=axis, where=where, from_logits=from_logits)
  dp = prep.dists[0]
  d = dp.log_prob if len(arrays) == 1 else dp.log_prob - prep.dists[1].log_prob
  out = _order_family(
      dp.prob, dp.log_prob, d, _alpha_for(alpha, prep), prep.axis, prep.from_logits,
      general=general,
      at_one=lambda: at_one(dp.prob, d, prep.axis),
      at_inf=at_inf,
      one_slope=None if one_slope is None else lambda: one_slope(dp.prob, d, prep.axis),
  )
  return out, prep


def renyi_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence of order ``alpha``, D_alpha(p‖q).

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1} \log \sum_i p_i^\alpha q_i^{1-\alpha},

  for every ``alpha`` in ``[0, inf]``, with the exact limits
  ``D_0 = -log q(supp p)``, ``D_1 = KL(p‖q)`` and ``D_inf = log max_{p_i>0} p_i / q_i``.
  Non-decreasing in ``alpha``.

  Args:
    p: the reference distribution, shape ``[..., n, ...]``.
    q: the second distribution, broadcastable with ``p``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); a scalar, or an array over the batch
      shape; may be traced (differentiable).
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.renyi_divergence(p, q, alpha=2.0)), 4))
    1.0217

  References:
    Rényi, On Measures of Entropy and Information, 1961; van Erven & Harremoës, Rényi
    Divergence and Kullback–Leibler Divergence, 2014.
  """
  _checks.check_base(base)
  out, prep = _family((p, q), alpha, axis=axis, where=where, from_logits=from_logits,
                      general=lambda log_s, t: log_s / t, at_one=_kl_terms,
                      at_inf=lambda dmax: dmax, one_slope=_half_variance)
  return _common.finish(out, prep, base, nonnegative=True)


def renyi_entropy(
    p: ArrayLike, alpha: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Rényi entropy of order ``alpha``.

  .. math::
    H_\alpha(p) = \frac{1}{1 - \alpha} \log \sum_i p_i^\alpha,

  with the exact limits ``H_0 = log |supp p|`` (Hartley), ``H_1 = H(p)`` (Shannon) and
  ``H_inf = -log max_i p_i`` (min-entropy). Non-increasing in ``alpha``.

  Args:
    p: probabilities (or logits), shape ``[..., n, ...]``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to ``p``.
    from_logits: ``p`` holds logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    H_alpha(p), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.renyi_entropy(jnp.array([0.25] * 4), alpha=2.0, base=2)))
    2.0

  References:
    Rényi, On Measures of Entropy and Information, 1961.
  """
  _checks.check_base(base)
  # H_alpha(p) = -D_alpha(p || counting measure): the divergence with log q = 0.
  out, prep = _family((p,), alpha, axis=axis, where=where, from_logits=from_logits,
                      general=lambda log_s, t: log_s / t, at_one=_kl_terms,
                      at_inf=lambda dmax: dmax, one_slope=_half_variance)
  return _common.finish(-out, prep, base, nonnegative=True)


def tsallis_entropy(
    p: ArrayLike, alpha: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False,
) -> jax.Array:
  r"""Tsallis entropy of order ``alpha`` (the ``q`` of statistical physics).

  .. math::
    S_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha - 1},

  with the exact limits ``S_1 = H(p)`` (Shannon, nats) and ``S_inf = 0``; ``S_0`` is
  ``|supp p| - 1`` and ``S_2`` the Gini impurity.

  Args:
    p: probabilities (or logits), shape ``[..., n, ...]``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to ``p``.
    from_logits: ``p`` holds logits.

  Returns:
    S_alpha(p), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.tsallis_entropy(jnp.array([0.5, 0.5]), alpha=2.0)))
    0.5

  References:
    Tsallis, Possible Generalization of Boltzmann–Gibbs Statistics, 1988.
  """
  out, prep = _family((p,), alpha, axis=axis, where=where, from_logits=from_logits,
                      general=lambda log_s, t: -jnp.expm1(log_s) / t,
                      at_one=lambda p_, d, ax: -_kl_terms(p_, d, ax),
                      at_inf=jnp.zeros_like)
  return _common.finish(out, prep, nonnegative=True)


def _inf_if_positive(dmax):
  return jnp.where(dmax > 0, jnp.inf, 0.0).astype(dmax.dtype)


def tsallis_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False,
) -> jax.Array:
  r"""Tsallis relative entropy of order ``alpha``.

  .. math::
    D^T_\alpha(p \,\|\, q) = \frac{\sum_i p_i^\alpha q_i^{1-\alpha} - 1}{\alpha - 1}
      = \frac{\exp((\alpha - 1) D_\alpha(p\|q)) - 1}{\alpha - 1},

  with the exact limit ``KL(p‖q)`` at ``alpha = 1``; at ``alpha = inf`` it is ``+inf`` unless
  ``p == q`` on the support of ``p``.

  Args:
    p: the reference distribution, shape ``[..., n, ...]``.
    q: the second distribution, broadcastable with ``p``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    The Tsallis divergence, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.tsallis_divergence(p, q, alpha=2.0)), 4))
    1.7778

  References:
    Furuichi, Yanagi & Kuriyama, Fundamental Properties of Tsallis Relative Entropy, 2004.
  """
  out, prep = _family((p, q), alpha, axis=axis, where=where, from_logits=from_logits,
                      general=lambda log_s, t: jnp.expm1(log_s) / t, at_one=_kl_terms,
                      at_inf=_inf_if_positive)
  return _common.finish(out, prep, nonnegative=True)


def alpha_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False,
) -> jax.Array:
  r"""Cichocki–Amari alpha-divergence.

  .. math::
    D^{(\alpha)}(p \,\|\, q) = \frac{\sum_i p_i^\alpha q_i^{1-\alpha} - 1}{\alpha(\alpha - 1)},

  with the exact limits ``KL(p‖q)`` at ``alpha = 1`` and ``KL(q‖p)`` at ``alpha = 0``. Every
  real ``alpha`` is allowed: ``D^(alpha)(p‖q) = D^(1-alpha)(q‖p)``, so ``alpha = 2`` is half
  Pearson's chi-squared, ``alpha = -1`` half Neyman's and ``alpha = 1/2`` four times the squared
  Hellinger distance.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    alpha: the order, any real (``+-jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    The alpha-divergence, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.alpha_divergence(p, q, alpha=2.0)), 4))
    0.8889

  References:
    Amari, Differential-Geometrical Methods in Statistics, 1985; Cichocki & Amari, Families of
    Alpha- Beta- and Gamma-Divergences, 2010.
  """
  _checks.check_real(alpha, "alpha", allow_inf=True)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits)
  dp, dq = prep.dists
  a = _static_alpha(alpha)
  if a is not None:
    # D^(a)(p||q) = D^(1-a)(q||p): evaluate with an order >= 1/2, where p^a q^(1-a) needs only
    # the support of the first argument.
    if a < 0.5:
      dp, dq, a_eff = dq, dp, 1.0 - a
    else:
      a_eff = a
  else:
    alpha = _alpha_for(alpha, prep)
    swap = alpha < 0.5
    a_eff = jnp.where(swap, 1 - alpha, alpha)
    dp, dq = (
        _common.Dist(jnp.where(swap, dq.prob, dp.prob), jnp.where(swap, dq.log_prob, dp.log_prob)),
        _common.Dist(jnp.where(swap, dp.prob, dq.prob), jnp.where(swap, dp.log_prob, dq.log_prob)),
    )
  d = dp.log_prob - dq.log_prob
  a_b = a_eff if (np.ndim(a_eff) == 0) else jnp.squeeze(a_eff, prep.axis)
  a_b = jnp.where(jnp.isinf(a_b), 2.0, a_b)  # only read where the finite branch is selected
  out = _order_family(
      dp.prob, dp.log_prob, d, a_eff, prep.axis, prep.from_logits,
      general=lambda log_s, t: jnp.expm1(log_s) / (t * a_b),
      at_one=lambda: _kl_terms(dp.prob, d, prep.axis),
      at_inf=_inf_if_positive,
  )
  return _common.finish(out, prep, nonnegative=True)
